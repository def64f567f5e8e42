//! `run = [...]` on a node: the commands `up` keeps running inside it, each
//! given to `sh -c` as written.

use toml::Spanned;

use super::context::Checker;

/// The node's commands; an empty one (or one with a NUL byte, which no
/// process argument can hold) is refused at its line.
pub fn validate(c: &mut Checker<'_>, i: usize, run: Option<&[Spanned<String>]>) -> Vec<String> {
    let mut out = Vec::new();
    for (j, cmd) in run.unwrap_or_default().iter().enumerate() {
        let field = format!("nodes[{i}].run[{j}]");
        let text = cmd.get_ref();
        if text.trim().is_empty() {
            c.at(cmd, field, "empty command");
        } else if text.contains('\0') {
            c.at(cmd, field, "a command cannot contain a NUL byte");
        } else if out.contains(text) {
            // A service is known by its node and command.
            c.at(cmd, field, "the same command twice in one node");
        } else {
            out.push(text.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::model::{
        test_support::{err, with_base},
        validate::parse,
    };

    const RED: &str =
        "[[nodes]]\nname = \"red\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.1\"\n";

    #[test]
    fn commands_are_kept_as_written() {
        let text = with_base(&format!(
            "{RED}run = [\"python3 -m http.server 8000\", \"sleep 1000 > /dev/null\"]\n"
        ));
        let lab = parse("lab.toml", &text).unwrap();
        assert_eq!(
            lab.nodes[0].run,
            ["python3 -m http.server 8000", "sleep 1000 > /dev/null"]
        );
        let lab = parse("lab.toml", &with_base(RED)).unwrap();
        assert!(lab.nodes[0].run.is_empty());
    }

    #[test]
    fn empty_commands_are_refused_at_their_line() {
        let e = err(&with_base(&format!(
            "{RED}run = [\n  \"sleep 1\",\n  \"  \",\n]\n"
        )));
        assert_eq!(e, "lab.toml:13: nodes[0].run[1]: empty command");
        let e = err(&with_base(&format!("{RED}run = [\"a\\u0000b\"]\n")));
        assert_eq!(
            e,
            "lab.toml:11: nodes[0].run[0]: a command cannot contain a NUL byte"
        );
        let e = err(&with_base(&format!(
            "{RED}run = [\"sleep 1\", \"sleep 1\"]\n"
        )));
        assert_eq!(
            e,
            "lab.toml:11: nodes[0].run[1]: the same command twice in one node"
        );
        let e = err(&with_base(&format!("{RED}run = \"sleep 1\"\n")));
        assert!(e.contains("lab.toml:11"), "{e}");
    }
}
