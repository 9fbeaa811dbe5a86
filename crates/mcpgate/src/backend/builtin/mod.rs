//! The built-in tools, so mcpgate is useful with no upstream: `whoami`, `echo` and a per-principal notes
//! store (`notes_*` tools, `notes://{id}` resources and template, a prompt, completions).

mod notes;

use std::path::Path;

use async_trait::async_trait;
use rmcp::ErrorData;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, CompleteRequestParams, CompleteResult, ContentBlock,
    GetPromptRequestParams, GetPromptResult, Prompt, ReadResourceRequestParams, ReadResourceResult,
    Resource, ResourceTemplate, ServerCapabilities, Tool,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use notes::{Note, NotesError, NotesStore};

use super::{Backend, Call};

#[derive(Debug, thiserror::Error)]
pub enum BuiltinError {
    #[error(transparent)]
    Notes(#[from] NotesError),
    #[error("{0}")]
    Definition(String),
}

const NOTE_SCHEME: &str = "notes://";

pub struct BuiltinBackend {
    notes: NotesStore,
    tools: Vec<Tool>,
}

impl BuiltinBackend {
    pub async fn open(notes_db: &Path) -> Result<Self, BuiltinError> {
        let tools =
            tool_definitions().map_err(|e| BuiltinError::Definition(e.message.to_string()))?;
        Ok(Self {
            notes: NotesStore::open(notes_db).await?,
            tools,
        })
    }

    async fn run_tool(
        &self,
        params: CallToolRequestParams,
        call: &Call<'_>,
    ) -> Result<CallToolResult, ErrorData> {
        let principal = call.principal.as_ref();
        let args = Value::Object(params.arguments.unwrap_or_default());
        match params.name.as_ref() {
            "whoami" => {
                let version = call.context.protocol_version().map(|v| v.to_string());
                let me = json!({
                    "principal": principal.subject,
                    "issuer": principal.issuer,
                    "client_id": principal.client_id,
                    "scopes": principal.scopes.iter().collect::<Vec<_>>(),
                    "claims": principal.claims,
                    "transport": call.transport.as_str(),
                    "protocol_version": version,
                });
                Ok(structured(me))
            }
            "echo" => {
                let EchoArgs { text } = parse_args(args)?;
                Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
            }
            "notes_list" => {
                let notes = self.notes.list(principal).await.map_err(store_error)?;
                let items: Vec<Value> = notes
                    .iter()
                    .map(|n| json!({ "id": n.id, "updated_at": n.updated_at, "bytes": n.content.len() }))
                    .collect();
                Ok(structured(json!({ "notes": items })))
            }
            "notes_get" => {
                let IdArgs { id } = parse_args(args)?;
                match self.notes.get(principal, &id).await {
                    Ok(Some(note)) => Ok(CallToolResult::success(vec![ContentBlock::text(
                        note.content,
                    )])),
                    Ok(None) => Ok(tool_error(format!("no note named {id:?}"))),
                    Err(e) => note_failure(e),
                }
            }
            "notes_put" => {
                let PutArgs { id, content } = parse_args(args)?;
                match self.notes.put(principal, &id, &content).await {
                    Ok(note) => Ok(structured(
                        json!({ "id": note.id, "updated_at": note.updated_at }),
                    )),
                    Err(e) => note_failure(e),
                }
            }
            "notes_delete" => {
                let IdArgs { id } = parse_args(args)?;
                match self.notes.delete(principal, &id).await {
                    Ok(true) => Ok(structured(json!({ "deleted": id }))),
                    Ok(false) => Ok(tool_error(format!("no note named {id:?}"))),
                    Err(e) => note_failure(e),
                }
            }
            other => Err(ErrorData::invalid_params(
                format!("unknown tool {other:?}"),
                None,
            )),
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EchoArgs {
    text: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct IdArgs {
    id: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PutArgs {
    id: String,
    content: String,
}

fn parse_args<T: DeserializeOwned>(args: Value) -> Result<T, ErrorData> {
    serde_json::from_value(args)
        .map_err(|e| ErrorData::invalid_params(format!("invalid arguments: {e}"), None))
}

fn structured(value: Value) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(value.to_string())]);
    result.structured_content = Some(value);
    result
}

fn tool_error(message: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
}

/// Input problems are the caller's to fix (tool error); store failures are ours (JSON-RPC error).
fn note_failure(e: NotesError) -> Result<CallToolResult, ErrorData> {
    match e {
        NotesError::InvalidId | NotesError::TooLarge | NotesError::TooMany => {
            Ok(tool_error(e.to_string()))
        }
        other => Err(store_error(other)),
    }
}

fn store_error(e: NotesError) -> ErrorData {
    tracing::error!(error = %e, "notes store failure");
    ErrorData::internal_error("the notes store is unavailable", None)
}

fn from_json<T: DeserializeOwned>(value: Value) -> Result<T, ErrorData> {
    serde_json::from_value(value)
        .map_err(|e| ErrorData::internal_error(format!("malformed built-in MCP object: {e}"), None))
}

fn tool_definitions() -> Result<Vec<Tool>, ErrorData> {
    let id = json!({ "type": "string", "description": "Note id: letters, digits, '.', '_' or '-'", "maxLength": notes::MAX_ID_LEN });
    [
        json!({
            "name": "whoami",
            "title": "Who am I",
            "description": "The authenticated principal, its scopes, the transport and the protocol version.",
            "inputSchema": { "type": "object", "properties": {}, "additionalProperties": false },
            "annotations": { "readOnlyHint": true, "destructiveHint": false, "idempotentHint": true, "openWorldHint": false },
        }),
        json!({
            "name": "echo",
            "title": "Echo",
            "description": "Answers with the text it was given (a smoke test; what bench/ measures).",
            "inputSchema": { "type": "object", "properties": { "text": { "type": "string" } }, "required": ["text"], "additionalProperties": false },
            "annotations": { "readOnlyHint": true, "destructiveHint": false, "idempotentHint": true, "openWorldHint": false },
        }),
        json!({
            "name": "notes_list",
            "title": "List notes",
            "description": "List your notes (ids, sizes, last update).",
            "inputSchema": { "type": "object", "properties": {}, "additionalProperties": false },
            "annotations": { "readOnlyHint": true, "destructiveHint": false, "idempotentHint": true, "openWorldHint": false },
        }),
        json!({
            "name": "notes_get",
            "title": "Read a note",
            "description": "Read one of your notes.",
            "inputSchema": { "type": "object", "properties": { "id": id }, "required": ["id"], "additionalProperties": false },
            "annotations": { "readOnlyHint": true, "destructiveHint": false, "idempotentHint": true, "openWorldHint": false },
        }),
        json!({
            "name": "notes_put",
            "title": "Write a note",
            "description": "Create or replace one of your notes.",
            "inputSchema": {
                "type": "object",
                "properties": { "id": id, "content": { "type": "string", "description": "The note's text (at most 64 KiB)" } },
                "required": ["id", "content"],
                "additionalProperties": false,
            },
            "annotations": { "readOnlyHint": false, "destructiveHint": true, "idempotentHint": true, "openWorldHint": false },
        }),
        json!({
            "name": "notes_delete",
            "title": "Delete a note",
            "description": "Delete one of your notes.",
            "inputSchema": { "type": "object", "properties": { "id": id }, "required": ["id"], "additionalProperties": false },
            "annotations": { "readOnlyHint": false, "destructiveHint": true, "idempotentHint": true, "openWorldHint": false },
        }),
    ]
    .into_iter()
    .map(from_json)
    .collect()
}

fn note_resource(note: &Note) -> Result<Resource, ErrorData> {
    from_json(json!({
        "uri": format!("{NOTE_SCHEME}{}", note.id),
        "name": note.id,
        "mimeType": "text/plain",
        "size": note.content.len(),
    }))
}

#[async_trait]
impl Backend for BuiltinBackend {
    fn implementation(&self) -> (String, String, Option<String>) {
        (
            "mcpgate".into(),
            env!("CARGO_PKG_VERSION").into(),
            Some("Built-in tools: `whoami` tells who you are; `notes_*` keep private notes (also readable as notes://{id} resources).".into()),
        )
    }

    fn capabilities(&self) -> ServerCapabilities {
        ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_prompts()
            .enable_completions()
            .build()
    }

    async fn list_tools(&self, _call: Call<'_>) -> Result<Vec<Tool>, ErrorData> {
        Ok(self.tools.clone())
    }

    fn tool_read_only(&self, name: &str) -> Option<bool> {
        let tool = self.tools.iter().find(|t| t.name == name)?;
        Some(
            tool.annotations
                .as_ref()
                .and_then(|a| a.read_only_hint)
                .unwrap_or(false),
        )
    }

    async fn call_tool(
        &self,
        params: CallToolRequestParams,
        call: Call<'_>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run_tool(params, &call).await
    }

    async fn list_resources(&self, call: Call<'_>) -> Result<Vec<Resource>, ErrorData> {
        let notes = self.notes.list(call.principal).await.map_err(store_error)?;
        notes.iter().map(note_resource).collect()
    }

    async fn list_resource_templates(
        &self,
        _call: Call<'_>,
    ) -> Result<Vec<ResourceTemplate>, ErrorData> {
        Ok(vec![from_json(json!({
            "uriTemplate": "notes://{id}",
            "name": "note",
            "title": "A note",
            "description": "One of your notes, by id.",
            "mimeType": "text/plain",
        }))?])
    }

    async fn read_resource(
        &self,
        params: ReadResourceRequestParams,
        call: Call<'_>,
    ) -> Result<ReadResourceResult, ErrorData> {
        let not_found =
            || ErrorData::resource_not_found(format!("no resource {}", params.uri), None);
        let id = params.uri.strip_prefix(NOTE_SCHEME).ok_or_else(not_found)?;
        if notes::validate_id(id).is_err() {
            return Err(not_found());
        }
        let note = self
            .notes
            .get(call.principal, id)
            .await
            .map_err(store_error)?
            .ok_or_else(not_found)?;
        from_json(json!({
            "contents": [{ "uri": params.uri, "mimeType": "text/plain", "text": note.content }],
        }))
    }

    async fn list_prompts(&self, _call: Call<'_>) -> Result<Vec<Prompt>, ErrorData> {
        Ok(vec![from_json(json!({
            "name": "review_notes",
            "title": "Review my notes",
            "description": "Ask the model to review your notes and suggest what to do next.",
            "arguments": [{ "name": "focus", "description": "What to focus on (optional)", "required": false }],
        }))?])
    }

    async fn get_prompt(
        &self,
        params: GetPromptRequestParams,
        call: Call<'_>,
    ) -> Result<GetPromptResult, ErrorData> {
        if params.name != "review_notes" {
            return Err(ErrorData::invalid_params(
                format!("no prompt {:?}", params.name),
                None,
            ));
        }
        let focus = params
            .arguments
            .as_ref()
            .and_then(|a| a.get("focus"))
            .and_then(Value::as_str)
            .unwrap_or("anything important")
            .to_owned();
        let notes = self.notes.list(call.principal).await.map_err(store_error)?;
        let listing = if notes.is_empty() {
            "(no notes yet)".to_owned()
        } else {
            notes
                .iter()
                .map(|n| format!("## {}\n{}", n.id, n.content))
                .collect::<Vec<_>>()
                .join("\n\n")
        };
        from_json(json!({
            "description": "Review of your notes",
            "messages": [{
                "role": "user",
                "content": { "type": "text", "text": format!("Review these notes, focusing on {focus}:\n\n{listing}") },
            }],
        }))
    }

    async fn complete(
        &self,
        params: CompleteRequestParams,
        call: Call<'_>,
    ) -> Result<CompleteResult, ErrorData> {
        let reference = serde_json::to_value(&params.r#ref).unwrap_or_default();
        let is_note_template = reference.get("uri").and_then(Value::as_str) == Some("notes://{id}");
        if !is_note_template || params.argument.name != "id" {
            return from_json(json!({ "completion": { "values": [] } }));
        }
        let prefix = params.argument.value.as_str();
        let notes = self.notes.list(call.principal).await.map_err(store_error)?;
        let values: Vec<&str> = notes
            .iter()
            .map(|n| n.id.as_str())
            .filter(|id| id.starts_with(prefix))
            .take(100)
            .collect();
        from_json(json!({ "completion": { "values": values, "hasMore": false } }))
    }

    async fn readiness(&self) -> Result<(), String> {
        self.notes.ping().await.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_is_annotated() {
        let tools = tool_definitions().unwrap();
        assert_eq!(tools.len(), 6);
        for tool in tools {
            let a = tool.annotations.expect("annotated");
            assert!(
                a.read_only_hint.is_some() && a.destructive_hint.is_some(),
                "{}",
                tool.name
            );
        }
    }

    #[test]
    fn resources_and_prompts_are_well_formed() {
        let note = Note {
            id: "a".into(),
            content: "xyz".into(),
            updated_at: 0,
        };
        assert_eq!(note_resource(&note).unwrap().uri, "notes://a");
    }
}
