// Compare conformance results run directly against a backend and through mcpgate.
//
//   node compare.mjs LABEL DIRECT_DIR GATEWAY_DIR [BASELINE_YML]
//
// Reads the suite's `-o` output (<dir>/server-<scenario>-<timestamp>/checks.json). A scenario
// passes when it has no FAILURE and no WARNING check (the suite's own rule). Prints one line per
// scenario and `LABEL: N passed, M failed, K skipped` (K = baseline entries) (scenarios through mcpgate). Exit 1 when a
// scenario passing directly fails through mcpgate, or dns-rebinding-protection fails through
// mcpgate, or the results contradict the baseline (unlisted failure or stale entry).
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const [label, directDir, gatewayDir, baselineFile] = process.argv.slice(2);
const MUST_PASS = ["dns-rebinding-protection"];

function results(dir) {
  const out = new Map();
  for (const d of readdirSync(dir)) {
    const scenario = d.replace(/^server-/, "").replace(/-\d{4}-\d{2}-\d{2}T[\d-]+Z$/, "");
    const checks = JSON.parse(readFileSync(join(dir, d, "checks.json"), "utf8"));
    const bad = checks.filter((c) => c.status === "FAILURE" || c.status === "WARNING");
    out.set(scenario, { pass: bad.length === 0, why: bad.map((c) => `${c.id}: ${c.errorMessage ?? c.status}`).join("; ") });
  }
  return out;
}

// The baseline's `server:` list (one `- name  # reason` per line; no other YAML is used).
const baseline = new Set(
  (baselineFile ? readFileSync(baselineFile, "utf8") : "")
    .split("\n")
    .map((l) => l.match(/^\s*-\s*([\w-]+)/)?.[1])
    .filter(Boolean),
);

const direct = results(directDir);
const gateway = results(gatewayDir);
let passed = 0, failed = 0, expected = 0, problems = 0;
for (const [scenario, g] of [...gateway].sort()) {
  const d = direct.get(scenario);
  let verdict;
  if (g.pass) {
    passed++;
    verdict = baseline.has(scenario) ? "PASS (stale baseline entry: remove it)" : "PASS";
    if (baseline.has(scenario)) problems++;
  } else {
    failed++;
    if (d?.pass) verdict = "FAIL (REGRESSION: passes directly against the backend)";
    else if (MUST_PASS.includes(scenario)) verdict = "FAIL (must pass through mcpgate)";
    else if (baseline.has(scenario)) verdict = "FAIL (expected: in baseline)";
    else verdict = "FAIL (not in baseline, fails directly too)";
    if (verdict.includes("expected")) expected++;
    else problems++;
  }
  console.log(`${verdict.startsWith("PASS") ? "PASS" : "FAIL"} ${scenario}${verdict.slice(4)}`);
  if (!g.pass && !verdict.includes("expected")) console.log(`    ${g.why}`);
}
for (const s of MUST_PASS)
  if (!gateway.has(s)) {
    problems++;
    console.log(`FAIL ${s} (did not run)`);
  }
for (const [scenario, d] of direct)
  if (d.pass && !gateway.has(scenario)) {
    problems++;
    console.log(`FAIL ${scenario} (passes directly, did not run through mcpgate)`);
  }
console.log(`${expected} expected failures (baseline), ${problems} unexpected results`);
// Baseline (expected) failures count as skipped: they fail against the backend itself too.
console.log(`${label}: ${passed} passed, ${failed - expected} failed, ${expected} skipped`);
process.exit(problems ? 1 : 0);
