//! natrec's own JSON Lines: one [`FlowEvent`] a line.

use crate::model::FlowEvent;

/// Reads a natrec JSON Lines line (`None` for a blank line).
pub fn parse_jsonl_line(line: &str) -> Result<Option<FlowEvent>, String> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(line).map(Some).map_err(|e| format!("not a natrec event: {e}"))
}

/// Appends `ev` as a natrec JSON Lines line (with its newline).
pub fn render_jsonl(ev: &FlowEvent, out: &mut String) -> Result<(), serde_json::Error> {
    out.push_str(&serde_json::to_string(ev)?);
    out.push('\n');
    Ok(())
}
