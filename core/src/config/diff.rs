//! Which keys differ between two config files: what a reload would change
//! (`sesame check-config`, against the config the running process wrote
//! down). Key paths only, never values: a value may be a secret.

use std::collections::BTreeMap;

use toml::Value;

/// How a key differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Removed,
    Changed,
}

impl Change {
    pub fn label(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Changed => "changed",
        }
    }
}

/// The keys of `after` that differ from `before`, by path as a config
/// error names them (`site[0].public_paths`): a table or an entry of an
/// array of tables (`[[site]]`) that only one side has is one key.
pub fn changed_keys(before: &str, after: &str) -> Result<Vec<(String, Change)>, String> {
    let parse = |text: &str, which: &str| {
        text.parse::<toml::Table>()
            .map_err(|e| format!("{which}: {}", e.message()))
    };
    let (before, after) = (parse(before, "before")?, parse(after, "after")?);
    let mut out = Vec::new();
    tables("", &before, &after, &mut out);
    Ok(out)
}

fn tables(at: &str, before: &toml::Table, after: &toml::Table, out: &mut Vec<(String, Change)>) {
    // Sorted, both sides' keys once each.
    let mut keys: BTreeMap<&str, (Option<&Value>, Option<&Value>)> = BTreeMap::new();
    for (k, v) in before {
        keys.entry(k).or_default().0 = Some(v);
    }
    for (k, v) in after {
        keys.entry(k).or_default().1 = Some(v);
    }
    for (k, sides) in keys {
        let path = if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        };
        values(path, sides, out);
    }
}

fn values(path: String, sides: (Option<&Value>, Option<&Value>), out: &mut Vec<(String, Change)>) {
    match sides {
        (None, None) => {}
        (None, Some(_)) => out.push((path, Change::Added)),
        (Some(_), None) => out.push((path, Change::Removed)),
        (Some(Value::Table(b)), Some(Value::Table(a))) => tables(&path, b, a, out),
        (Some(Value::Array(b)), Some(Value::Array(a))) if all_tables(b) && all_tables(a) => {
            for i in 0..b.len().max(a.len()) {
                values(format!("{path}[{i}]"), (b.get(i), a.get(i)), out);
            }
        }
        (Some(b), Some(a)) if b != a => out.push((path, Change::Changed)),
        _ => {}
    }
}

fn all_tables(items: &[Value]) -> bool {
    !items.is_empty() && items.iter().all(Value::is_table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_changed_key_and_whole_entries_added_or_removed() {
        let before = r#"
[server]
listen = ["0.0.0.0:8080"]
[mail]
smtp_url = "smtp://user:old-secret@mail"
[[site]]
name = "Wiki"
public_url = "https://wiki.example.com"
[[site]]
name = "Grafana"
public_url = "https://grafana.example.com"
"#;
        let after = r#"
[server]
listen = ["0.0.0.0:8080", "[::]:8080"]
[mail]
smtp_url = "smtp://user:new-secret@mail"
[[site]]
name = "Wiki"
public_url = "https://wiki.example.com"
public_paths = ["/static"]
[users]
signup = "open"
"#;
        let changes = changed_keys(before, after).unwrap();
        assert_eq!(
            changes,
            vec![
                ("mail.smtp_url".to_string(), Change::Changed),
                ("server.listen".to_string(), Change::Changed),
                ("site[0].public_paths".to_string(), Change::Added),
                ("site[1]".to_string(), Change::Removed),
                ("users".to_string(), Change::Added),
            ]
        );
        // Names, never values.
        let text = format!("{changes:?}");
        assert!(!text.contains("secret"), "{text}");
        assert_eq!(changed_keys(before, before).unwrap(), vec![]);
        // Formatting and comments are not changes.
        let reformatted = before.replace("name = \"Wiki\"", "name   =   \"Wiki\"  # the docs");
        assert_eq!(changed_keys(before, &reformatted).unwrap(), vec![]);
    }

    #[test]
    fn an_unparsable_side_is_an_error_not_a_panic() {
        assert!(changed_keys("[server", "").is_err());
        assert!(changed_keys("", "x = ").is_err());
    }
}
