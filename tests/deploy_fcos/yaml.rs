//! The part of YAML that Butane's configs need, read strictly (see [`Yaml`]).

use std::collections::BTreeMap;

/// A YAML document as `path → value` (`storage.files[1].mode` → `0644`),
/// read from the part of YAML that Butane's configs need: mappings,
/// sequences of mappings, plain scalars and `|` blocks. Anything else fails
/// the test rather than being guessed at, so that what passes is YAML with
/// exactly this meaning.
pub struct Yaml {
    lines: Vec<String>,
    pos: usize,
    values: BTreeMap<String, String>,
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

impl Yaml {
    pub fn parse(text: &str) -> Result<BTreeMap<String, String>, String> {
        let lines = text.lines().map(str::to_string).collect();
        let mut yaml = Yaml {
            lines,
            pos: 0,
            values: BTreeMap::new(),
        };
        yaml.node(0, "")?;
        match yaml.next() {
            None => Ok(yaml.values),
            Some(_) => yaml.fail("a line outside the document's structure"),
        }
    }

    /// The indentation of the next line that is not blank or a comment.
    fn next(&mut self) -> Option<usize> {
        while let Some(line) = self.lines.get(self.pos) {
            if !line.trim().is_empty() && !line.trim().starts_with('#') {
                return Some(indent_of(line));
            }
            self.pos += 1;
        }
        None
    }

    fn fail<T>(&self, what: &str) -> Result<T, String> {
        let line = self.lines.get(self.pos);
        Err(format!("line {}: {what}: {line:?}", self.pos + 1))
    }

    fn plain(&self, s: &str) -> Result<String, String> {
        let s = s.split(" #").next().unwrap_or_default().trim();
        let indicator = s.starts_with(|c| "-?:,[]{}#&*!|>'\"%@`".contains(c));
        if s.is_empty() || indicator || s.contains(": ") || s.ends_with(':') {
            return self.fail(&format!("{s:?} is not a plain scalar"));
        }
        Ok(s.to_string())
    }

    /// The mapping, or the sequence of `- ` items, whose lines are at `indent`.
    fn node(&mut self, indent: usize, path: &str) -> Result<(), String> {
        let (mut items, mut keys) = (0, Vec::new());
        while self.next() == Some(indent) {
            let line = self.lines[self.pos].clone();
            if line.contains('\t') {
                return self.fail("a tab");
            }
            let body = line.trim_start();
            if let Some(item) = body.strip_prefix("- ").filter(|_| keys.is_empty()) {
                // The item's mapping, as if its first key had a line of its own.
                self.lines[self.pos] = format!("{}{item}", " ".repeat(indent + 2));
                self.node(indent + 2, &format!("{path}[{items}]"))?;
                items += 1;
                continue;
            }
            let key_value = body
                .strip_suffix(':')
                .map(|k| (k, ""))
                .or(body.split_once(": "));
            let Some((key, rest)) = key_value.filter(|_| items == 0) else {
                return self.fail("expected `key: value`");
            };
            let key = self.plain(key)?;
            if keys.contains(&key) {
                return self.fail("a duplicate key");
            }
            let path = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            keys.push(key);
            let rest = rest.split(" #").next().unwrap_or_default().trim();
            let value = match rest {
                "" | "|" => None,
                scalar => Some(self.plain(scalar)?),
            };
            self.pos += 1;
            if rest == "|" {
                let text = self.literal(indent)?;
                self.values.insert(path, text);
            } else if let Some(value) = value {
                self.values.insert(path, value);
            } else if let Some(inner) = self.next().filter(|inner| *inner > indent) {
                self.node(inner, &path)?;
            } else {
                return self.fail("a key without a value");
            }
        }
        match self.next() {
            Some(at) if at > indent => self.fail("an unexpected indentation"),
            _ => Ok(()),
        }
    }

    /// A `|` block (clip: one final newline) under a key at `parent`.
    fn literal(&mut self, parent: usize) -> Result<String, String> {
        let (mut text, mut width) = (Vec::<String>::new(), None);
        while let Some(line) = self.lines.get(self.pos) {
            let at = indent_of(line);
            if line.len() == at {
                text.push(line.get(width.unwrap_or(usize::MAX)..).unwrap_or("").into());
            } else if at <= parent {
                break;
            } else if at < *width.get_or_insert(at) {
                return self.fail("a line less indented than its block");
            } else {
                text.push(line[width.unwrap_or(at)..].to_string());
            }
            self.pos += 1;
        }
        while text.last().is_some_and(String::is_empty) {
            text.pop();
        }
        Ok(text.iter().map(|l| format!("{l}\n")).collect())
    }
}
