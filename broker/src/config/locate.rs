//! Maps positions in a TOML text back to a line number and a dotted key.
//!
//! toml reports a byte span for each error; operators want `file:line` and
//! the key they wrote. These helpers do just enough TOML lexing (table
//! headers and `key = value` lines) to name them; they never fail, at worst
//! they name the section only.

/// The 1-based line of byte `offset` and the dotted key written on it (or the
/// enclosing table when the line is not a `key = value` line).
pub fn key_at(text: &str, offset: usize) -> (usize, String) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line_no = before.matches('\n').count() + 1;
    let mut section = String::new();
    for line in before.lines() {
        if let Some(name) = header(line) {
            section = name;
        }
    }
    let current = text.lines().nth(line_no - 1).unwrap_or("");
    if let Some(name) = header(current) {
        return (line_no, name);
    }
    let key = current
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .unwrap_or_default();
    let dotted = match (section.is_empty(), key.is_empty()) {
        (_, true) => section,
        (true, false) => key,
        (false, false) => format!("{section}.{key}"),
    };
    (line_no, dotted)
}

/// The 1-based line where `key` is set inside `[section]` (or `[[section]]`),
/// or the line of the section header when the key is absent.
pub fn line_of(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut in_section = false;
    let mut header_line = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(name) = header(line) {
            in_section = name == section;
            if in_section && header_line.is_none() {
                header_line = Some(i + 1);
            }
            continue;
        }
        if in_section {
            if let Some((k, _)) = line.split_once('=') {
                if k.trim().trim_matches('"') == key {
                    return Some(i + 1);
                }
            }
        }
    }
    header_line
}

/// The table name of a `[name]` or `[[name]]` header line.
fn header(line: &str) -> Option<String> {
    let t = line.trim();
    if !t.starts_with('[') {
        return None;
    }
    let inner = t.trim_start_matches('[');
    let end = inner.find(']')?;
    Some(inner[..end].trim().to_string())
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while offset > 0 && !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}
