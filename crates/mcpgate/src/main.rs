// glibc's malloc took a quarter of the CPU of an authenticated tool call and kept memory it had
// freed in per-thread arenas (bench/RESULTS.md); mimalloc is faster at the small, short-lived
// allocations of a request and gives freed pages back.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    mcpgate::cli::main()
}
