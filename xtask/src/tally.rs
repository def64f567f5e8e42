//! What the suites of `cargo xtask test` found, counted the same way for
//! every suite (libtest binaries, fuzz targets, the benchmark's smoke run, a
//! VM pass), and the one line CI's log ends with.

use std::{fmt, time::Duration};

/// Tests passed, failed and skipped (libtest's "ignored"), with the names
/// of the failures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
    pub failures: Vec<String>,
}

/// Cargo's own line before each test binary it runs (right-aligned to 12
/// columns, uncoloured in a pipe).
const PART_STARTS: [&str; 2] = ["     Running ", "   Doc-tests "];

impl Tally {
    /// One test that passed, or failed saying why.
    pub fn one(&mut self, name: &str, result: Result<(), String>) {
        match result {
            Ok(()) => self.passed += 1,
            Err(why) => self.fail(format!("{name}: {why}")),
        }
    }

    /// A failure that no test's own line reports (a crash, a build error).
    pub fn fail(&mut self, what: String) {
        self.failed += 1;
        self.failures.push(what);
    }

    pub fn add(&mut self, other: &Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.failures.extend(other.failures.iter().cloned());
    }

    /// Count the output of one test binary run directly; `success` is
    /// None when it was killed at a time limit.
    pub fn add_binary(&mut self, name: &str, lines: &[String], success: Option<bool>) {
        self.count(name, Some(name.to_string()), lines, success);
    }

    /// Count the output of `cargo test`, which runs each test binary after
    /// a line of its own.
    pub fn add_cargo_test(&mut self, name: &str, lines: &[String], success: Option<bool>) {
        self.count(name, None, lines, success);
    }

    /// libtest's verdicts in `lines`. A binary must end with its "test
    /// result:" line; one that does not (a crash, an abort, a kill at the
    /// time limit) counts as a failure, and so does a process that failed
    /// without any test failing (a build error). `success`: None when the
    /// process was killed.
    fn count(
        &mut self,
        name: &str,
        mut open: Option<String>,
        lines: &[String],
        success: Option<bool>,
    ) {
        let failed_before = self.failed;
        // Tests libtest said were slow and that have not ended: what a
        // binary killed at the time limit was waiting on.
        let mut slow: Vec<&str> = Vec::new();
        for line in lines {
            if let Some(test) = line
                .strip_prefix("test ")
                .and_then(|l| l.strip_suffix(" has been running for over 60 seconds"))
            {
                slow.push(test);
            } else if let Some((test, _)) = line
                .strip_prefix("test ")
                .and_then(|l| l.split_once(" ... "))
            {
                slow.retain(|t| *t != test);
            }
            if let Some(rest) = PART_STARTS.iter().find_map(|p| line.strip_prefix(p)) {
                let part = rest.split(" (").next().unwrap_or(rest).to_string();
                slow.clear();
                if let Some(unfinished) = open.replace(part) {
                    self.fail(format!("{unfinished}: ended without a test summary"));
                }
            } else if let Some(test) = line
                .strip_prefix("test ")
                .and_then(|l| l.strip_suffix(" ... FAILED"))
            {
                let part = open.as_deref().unwrap_or(name);
                self.failures.push(format!("{part}: {test}"));
            } else if let Some(result) = line.strip_prefix("test result: ") {
                open = None;
                for piece in result.split([';', '.']) {
                    match piece.split_whitespace().collect::<Vec<_>>()[..] {
                        [n, "passed"] => self.passed += n.parse::<u32>().unwrap_or(0),
                        [n, "failed"] => self.failed += n.parse::<u32>().unwrap_or(0),
                        [n, "ignored"] => self.skipped += n.parse::<u32>().unwrap_or(0),
                        _ => {}
                    }
                }
            }
        }
        if let Some(unfinished) = open {
            let why = match success {
                None if !slow.is_empty() => {
                    format!("killed at the time limit in {}", slow.join(", "))
                }
                None => "killed at the time limit".to_string(),
                Some(_) => "ended without a test summary".to_string(),
            };
            self.fail(format!("{unfinished}: {why}"));
        }
        match success {
            None if self.failed == failed_before => {
                self.fail(format!("{name}: killed at the time limit"))
            }
            Some(false) if self.failed == failed_before => {
                self.fail(format!("{name}: exited with an error"))
            }
            _ => {}
        }
    }

    /// `N passed, N failed, N skipped`.
    pub fn line(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }
}

/// One suite of a run and what it found.
pub struct Suite {
    pub name: String,
    pub tally: Tally,
    pub duration: Duration,
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<34} {:>5} passed {:>3} failed {:>3} skipped {:>6.0}s",
            self.name,
            self.tally.passed,
            self.tally.failed,
            self.tally.skipped,
            self.duration.as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Tally;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(String::from).collect()
    }

    #[test]
    fn cargo_test_parts_are_summed_with_their_failures_and_ignored_tests() {
        let out = lines(
            "   Compiling netlab v0.1.0\n\
             \x20    Running unittests src/lib.rs (target/debug/deps/netlab-1)\n\
             test a ... ok\n\
             test b ... FAILED\n\
             test result: FAILED. 7 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.1s\n\
             \x20  Doc-tests netlab\n\
             test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.0s\n",
        );
        let mut t = Tally::default();
        t.add_cargo_test("unit", &out, Some(false));
        assert_eq!((t.passed, t.failed, t.skipped), (7, 1, 2));
        assert_eq!(t.failures, ["unittests src/lib.rs: b"]);
        assert_eq!(t.line(), "7 passed, 1 failed, 2 skipped");
    }

    #[test]
    fn a_binary_that_crashes_or_a_build_that_fails_is_a_failure() {
        let out = lines(
            "\x20    Running tests/lab.rs (target/debug/deps/lab-1)\n\
             test a ... ok\n\
             \x20    Running tests/nat.rs (target/debug/deps/nat-1)\n\
             test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1s\n",
        );
        let mut t = Tally::default();
        t.add_cargo_test("privileged", &out, Some(false));
        assert_eq!((t.passed, t.failed), (3, 1));
        assert_eq!(t.failures, ["tests/lab.rs: ended without a test summary"]);

        let mut t = Tally::default();
        t.add_cargo_test(
            "unit",
            &lines("error[E0308]: mismatched types\n"),
            Some(false),
        );
        assert_eq!((t.passed, t.failed), (0, 1));
        assert_eq!(t.failures, ["unit: exited with an error"]);
    }

    #[test]
    fn a_binary_killed_at_the_time_limit_is_a_failure() {
        let mut t = Tally::default();
        t.add_binary("reliability", &lines("test a ... ok\n"), None);
        assert_eq!((t.passed, t.failed), (0, 1));
        assert_eq!(t.failures, ["reliability: killed at the time limit"]);
        let out = lines(
            "\x20    Running tests/ipv6.rs (target/debug/deps/ipv6-1)\n\
             test a has been running for over 60 seconds\n\
             test b has been running for over 60 seconds\n\
             test a ... ok\n",
        );
        let mut t = Tally::default();
        t.add_cargo_test("privileged", &out, None);
        assert_eq!(t.failures, ["tests/ipv6.rs: killed at the time limit in b"]);
        let mut t = Tally::default();
        let ok = "test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 1s\n";
        t.add_binary("lab", &lines(ok), Some(true));
        assert_eq!(t.line(), "2 passed, 0 failed, 1 skipped");
    }
}
