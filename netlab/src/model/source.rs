//! Problems with a lab file, each located by line and field, and the error
//! that carries them (`lab.toml:12: nodes[1].address: …`, exit code 2).

use std::{fmt, ops::Range};

use toml::Spanned;

/// One problem in a topology file, located by line and field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

/// Everything wrong with a topology file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub source_name: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.line {
                Some(line) => write!(f, "{}:{}: ", self.source_name, line)?,
                None => write!(f, "{}: ", self.source_name)?,
            }
            if p.field.is_empty() {
                write!(f, "{}", p.message)?;
            } else {
                write!(f, "{}: {}", p.field, p.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Largest lab file netlab reads (a lab of thousands of nodes is far
/// smaller); the caller reads at most one byte more, so `check -f
/// /dev/zero` stops at once.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// The text of a lab file read as `bytes` (at most [`MAX_FILE_BYTES`] + 1
/// of them): refused in one located line when it is too large, not UTF-8,
/// or holds a NUL byte (not a text file).
pub fn text_of<'b>(source_name: &str, bytes: &'b [u8]) -> Result<&'b str, ConfigError> {
    let fail = |line: Option<usize>, message: String| ConfigError {
        source_name: source_name.to_string(),
        problems: vec![Problem {
            line,
            field: String::new(),
            message,
        }],
    };
    let line_at = |offset: usize| bytes[..offset].iter().filter(|b| **b == b'\n').count() + 1;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(fail(
            None,
            format!("larger than {} KiB: not a lab file", MAX_FILE_BYTES / 1024),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        fail(
            Some(line_at(at)),
            format!("byte {} is not UTF-8: not a text file", at + 1),
        )
    })?;
    if let Some(at) = bytes.iter().position(|b| *b == 0) {
        return Err(fail(
            Some(line_at(at)),
            format!("byte {} is NUL: not a text file", at + 1),
        ));
    }
    Ok(text)
}

/// Where each field of a lab file is written: its path as problems name it
/// (`nodes[1].interfaces[0].host_name`, `nat.port_range`) → its line. Made
/// by parsing, so that checks made later (against the lab host, by `up`
/// and `check --host-netns`) report `file:line: field: message` like the
/// file's own problems.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceMap {
    source_name: String,
    /// Path, byte span of the value, line where the value starts.
    fields: Vec<(String, Range<usize>, usize)>,
}

impl SourceMap {
    /// The fields of `text`, named `source_name` in problems. A text that
    /// is not TOML has none.
    pub fn new(source_name: &str, text: &str) -> SourceMap {
        let mut map = SourceMap::unlocated(source_name);
        if let Ok(doc) = toml::de::DeTable::parse(text) {
            map.add_table(text, "", doc.get_ref());
        }
        map
    }

    /// A map of no fields: a lab that comes from no file (the default lab,
    /// the command line).
    pub fn unlocated(source_name: &str) -> SourceMap {
        SourceMap {
            source_name: source_name.to_string(),
            fields: Vec::new(),
        }
    }

    fn add_table(&mut self, text: &str, prefix: &str, table: &toml::de::DeTable<'_>) {
        for (key, value) in table.iter() {
            let path = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            self.add_value(text, path, value);
        }
    }

    fn add_value(&mut self, text: &str, path: String, value: &Spanned<toml::de::DeValue<'_>>) {
        let span = value.span();
        let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
        match value.get_ref() {
            toml::de::DeValue::Table(t) => self.add_table(text, &path, t),
            toml::de::DeValue::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    self.add_value(text, format!("{path}[{i}]"), item);
                }
            }
            _ => {}
        }
        self.fields.push((path, span, line));
    }

    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// Whether the file writes `field`.
    pub fn has(&self, field: &str) -> bool {
        self.fields.iter().any(|(p, ..)| p == field)
    }

    /// Whether the file has no field at all (empty, or only comments).
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The line of `field`. A field the file does not write (a default)
    /// is placed where its entry is named (`nodes[0].host_interface` at
    /// `nodes[0].name`), or else at its entry.
    pub fn line(&self, field: &str) -> Option<usize> {
        let exact = |f: &str| self.fields.iter().find(|(p, ..)| p == f).map(|e| e.2);
        let mut path = field;
        loop {
            if let Some(line) = exact(path) {
                return Some(line);
            }
            let parent = path.rfind(['.', '['].as_slice()).map(|i| &path[..i])?;
            if let Some(line) = exact(&format!("{parent}.name")) {
                return Some(line);
            }
            path = parent;
        }
    }

    /// The innermost field whose value holds byte `offset`.
    pub fn field_at(&self, offset: usize) -> Option<&str> {
        self.fields
            .iter()
            .filter(|(_, span, _)| span.contains(&offset))
            .min_by_key(|(_, span, _)| span.len())
            .map(|(p, ..)| p.as_str())
    }

    /// A problem with `field`, located.
    pub fn problem(&self, field: impl Into<String>, message: impl Into<String>) -> Problem {
        let field = field.into();
        Problem {
            line: self.line(&field),
            field,
            message: message.into(),
        }
    }

    /// The error of `problems` in this file, in the order of their lines.
    pub fn error(&self, mut problems: Vec<Problem>) -> ConfigError {
        problems.sort_by_key(|p| p.line);
        ConfigError {
            source_name: self.source_name.clone(),
            problems,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        test_support::{err, with_base},
        validate::{parse_file, parse_with_sources},
    };

    fn file_err(bytes: &[u8]) -> String {
        parse_file("lab.toml", bytes).unwrap_err().to_string()
    }

    #[test]
    fn a_file_too_large_or_not_text_is_one_located_line() {
        let huge = vec![b'#'; MAX_FILE_BYTES + 1];
        assert_eq!(
            file_err(&huge),
            "lab.toml: larger than 1024 KiB: not a lab file"
        );
        // Just under the limit it is read (and here, all comment, empty).
        let mut big = vec![b'#'; MAX_FILE_BYTES - 1];
        big.push(b'\n');
        assert!(file_err(&big).contains("the file is empty"));
        assert_eq!(
            file_err(b"name = \"x\"\n\xff\xfe\x00"),
            "lab.toml:2: byte 12 is not UTF-8: not a text file"
        );
        assert_eq!(
            file_err(b"name = \"x\"\n\n\x00\x01\x02"),
            "lab.toml:3: byte 13 is NUL: not a text file"
        );
        assert_eq!(file_err(b"name = \"x\"\n\x00").lines().count(), 1);
        let (lab, _) = parse_file("lab.toml", with_base("").as_bytes()).unwrap();
        assert_eq!(lab.name, "t");
    }

    #[test]
    fn an_empty_file_is_refused_not_taken_for_the_default_lab() {
        for text in ["", "\n\n", "# a lab, some day\n"] {
            assert_eq!(
                err(text),
                "lab.toml: the file is empty (nothing but blank lines and comments); without -f, \
                 netlab uses its default lab"
            );
        }
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_line_and_field() {
        let e = err(&with_base(
            "[[nodes]]\nname = \"red\"\nbridge = \"v-net-0\"\naddress = 5\n",
        ));
        assert_eq!(
            e,
            "lab.toml:10: nodes[0].address: invalid type: integer `5`, expected a string"
        );
        let e = err("[nat]\nfast_path = \"yes\"\n");
        assert!(
            e.starts_with("lab.toml:2: nat.fast_path: invalid type"),
            "{e}"
        );
        let e = err("[[bridges]]\nname = \"b\"\n");
        assert_eq!(e, "lab.toml:1: bridges[0]: missing field `subnet`");
    }

    #[test]
    fn source_map_locates_written_and_defaulted_fields() {
        let text = with_base(
            "[[nodes]]\nname = \"red\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.1\"\n\
             [[nodes]]\nname = \"blue\"\ninterfaces = [\n\
               { bridge = \"v-net-0\", address = \"192.168.15.2\" },\n]\n\
             [nat]\nport_range = \"40000-40999\"\n",
        );
        let (_, sources) = parse_with_sources("lab.toml", &text).unwrap();
        assert_eq!(sources.source_name(), "lab.toml");
        assert_eq!(sources.line("bridges[0].subnet"), Some(5));
        assert_eq!(sources.line("nodes[0].address"), Some(10));
        // Defaults: where the entry is named, or else where the entry is.
        assert_eq!(sources.line("nodes[0].host_interface"), Some(8));
        assert_eq!(sources.line("nodes[1].interfaces[0].host_name"), Some(14));
        assert_eq!(sources.line("nat.port_range"), Some(17));
        assert_eq!(sources.line("uplink.interface"), None);
        let p = sources.problem("nodes[1].name", "taken");
        assert_eq!((p.line, p.field.as_str()), (Some(12), "nodes[1].name"));
        assert_eq!(
            sources.error(vec![p]).to_string(),
            "lab.toml:12: nodes[1].name: taken"
        );
        let none = SourceMap::unlocated("command line");
        assert_eq!(
            none.error(vec![none.problem("port", "x")]).to_string(),
            "command line: port: x"
        );
    }
}
