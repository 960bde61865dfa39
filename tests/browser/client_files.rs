//! Checks on the web client's files that need no browser:
//! - the service worker's shell list names every file of the client, and its `SHELL_VERSION` is
//!   the hash of those files, so a deployment that changes any of them replaces the offline
//!   shell at the next load (see `static/sw.js`). After changing a file in `static/`, run
//!   `PODO_BLESS_SHELL=1 cargo test --features browser --test browser shell_version` to write the new version;
//! - every error code of the contract has a Korean text in `static/js/api.js`.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Files of the client the shell must hold: all of `static/` but the worker itself and the
/// manifest's screenshots (only install prompts fetch those).
fn client_files(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.expect("directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = format!("{prefix}/{name}");
        if entry.file_type().expect("file type").is_dir() {
            if path != "/media/screenshots" {
                client_files(&entry.path(), &path, out);
            }
        } else if path != "/sw.js" {
            out.insert(path);
        }
    }
}

/// The quoted strings on the lines between `start` and the next line that is `end`.
fn quoted_lines(text: &str, start: &str, end: &str) -> Vec<String> {
    text.lines()
        .skip_while(|line| line.trim() != start)
        .skip(1)
        .take_while(|line| line.trim() != end)
        .filter_map(|line| {
            let line = line.trim();
            let body = line.strip_prefix('\'')?;
            Some(body.split('\'').next()?.to_owned())
        })
        .collect()
}

/// FNV-1a, 64 bits: enough to tell versions apart, and no dependency.
fn fnv1a(state: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(state, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn shell_hash(files: &[String]) -> String {
    let mut hash = 0xcbf2_9ce4_8422_2325;
    for file in files {
        let bytes = std::fs::read(root().join("static").join(&file[1..]))
            .unwrap_or_else(|e| panic!("static{file}: {e}"));
        hash = fnv1a(hash, file.as_bytes());
        hash = fnv1a(hash, &[0]);
        hash = fnv1a(hash, &bytes);
        hash = fnv1a(hash, &[0]);
    }
    format!("{hash:016x}")
}

#[test]
fn shell_version() {
    let sw_path = root().join("static/sw.js");
    let sw = read(&sw_path);
    let listed = quoted_lines(&sw, "const SHELL = [", "];");
    let listed_set: BTreeSet<String> = listed.iter().cloned().collect();
    let mut files = BTreeSet::new();
    client_files(&root().join("static"), "", &mut files);
    let missing: Vec<_> = files.difference(&listed_set).collect();
    let extra: Vec<_> = listed_set.difference(&files).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "static/sw.js SHELL is out of step with static/: add {missing:?}, remove {extra:?}"
    );
    let sorted: Vec<String> = files.into_iter().collect();
    let expected = shell_hash(&sorted);
    let marker = "const SHELL_VERSION = '";
    let at = sw.find(marker).expect("SHELL_VERSION in sw.js") + marker.len();
    let current = sw[at..].split('\'').next().unwrap_or_default();
    if current == expected {
        return;
    }
    if std::env::var_os("PODO_BLESS_SHELL").is_some() {
        let updated = format!("{}{expected}{}", &sw[..at], &sw[at + current.len()..]);
        std::fs::write(&sw_path, updated).expect("write sw.js");
        return;
    }
    panic!(
        "static/ changed but static/sw.js SHELL_VERSION is still '{current}': set it to \
         '{expected}' (or run PODO_BLESS_SHELL=1 cargo test --features browser --test browser shell_version), so \
         that installed apps replace their offline copy"
    );
}

/// The codes after an HTTP status in API.md (`409 \`board_full\``, `→ 409 \`no_board\` /
/// \`board_full\``) and the chat error codes listed after "Codes:".
fn contract_codes(api_md: &str) -> BTreeSet<String> {
    let mut codes = BTreeSet::new();
    let tokens: Vec<&str> = api_md.split('`').collect();
    // Odd tokens are inside backticks; the text before each says what precedes it.
    for i in (1..tokens.len()).step_by(2) {
        let code = tokens[i];
        if code.is_empty() || !code.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        let before = tokens[i - 1].trim_end();
        let after_status = before
            .rsplit(|c: char| c.is_whitespace())
            .next()
            .is_some_and(|word| word.len() == 3 && word.chars().all(|c| c.is_ascii_digit()));
        let continues = (before == "/" || before == ",") && i >= 2 && codes.contains(tokens[i - 2]);
        if after_status || continues {
            codes.insert(code.to_owned());
        }
    }
    // Chat: "Codes: `invalid_frame` (...), `invalid_text` (...), ... `internal` if ...".
    let chat = api_md
        .split("Codes:")
        .nth(1)
        .and_then(|rest| rest.split("Frames over").next())
        .expect("the chat error codes in API.md");
    // Field names in the explanations, "(U+0000 in `text` or `client_id`)", are not codes.
    let mut depth = 0i32;
    for (i, token) in chat.split('`').enumerate() {
        if i % 2 == 0 {
            depth += token.matches('(').count() as i32 - token.matches(')').count() as i32;
        } else if depth == 0 && token.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            codes.insert(token.to_owned());
        }
    }
    codes
}

/// `code: '한국어 text',` lines of the MESSAGES object in api.js.
fn client_messages(api_js: &str) -> Vec<(String, String)> {
    api_js
        .lines()
        .skip_while(|line| !line.starts_with("const MESSAGES = {"))
        .skip(1)
        .take_while(|line| !line.starts_with("};"))
        .filter_map(|line| {
            let (key, value) = line.trim().split_once(": '")?;
            Some((key.to_owned(), value.trim_end_matches("',").to_owned()))
        })
        .collect()
}

#[test]
fn every_error_code_has_a_korean_text() {
    let api_md = read(&root().join("docs/API.md"));
    let mut codes = contract_codes(&api_md);
    for expected in [
        "board_full",
        "no_board",
        "not_stored",
        "too_many_sessions",
        "busy",
    ] {
        assert!(
            codes.contains(expected),
            "{expected} not found in API.md: {codes:?}"
        );
    }
    // Every code of the server is one of ErrorCode, and every code of the contract is too.
    let server: BTreeSet<String> = podo::error::ErrorCode::ALL
        .iter()
        .map(|code| code.as_str().to_owned())
        .collect();
    let undeclared: Vec<&String> = codes.difference(&server).collect();
    assert!(
        undeclared.is_empty(),
        "API.md names codes that ErrorCode lacks: {undeclared:?}"
    );
    codes.extend(server);
    let messages = client_messages(&read(&root().join("static/js/api.js")));
    let hangul = |text: &str| text.chars().any(|c| ('가'..='힣').contains(&c));
    let missing: Vec<&String> = codes
        .iter()
        .filter(|code| {
            !messages
                .iter()
                .any(|(key, text)| key == *code && hangul(text))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "static/js/api.js MESSAGES has no Korean text for {missing:?} (codes: {codes:?})"
    );
}
