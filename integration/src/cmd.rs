//! Running helper programs (`ip`, `ovs-vsctl`, ...) for the test bed: argv only, never a shell,
//! and every failure names the full command line, its exit status and its stderr so a broken
//! test bed explains itself.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Renders a command as `prog arg arg` for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion and returns its stdout; a non-zero exit is an error carrying stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    run_with_stdin(cmd, None)
}

/// Like [`run`], writing `input` to the command's stdin first (bulk input, e.g. flows).
pub fn run_with_stdin(cmd: &mut Command, input: Option<&[u8]>) -> Result<String> {
    let what = describe(cmd);
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{what}`"))?;
    if let Some(input) = input {
        // stdin is piped just above, so take() always yields it.
        let mut stdin = child.stdin.take().context("stdin of child")?;
        stdin
            .write_all(input)
            .with_context(|| format!("writing stdin of `{what}`"))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for `{what}`"))?;
    if !out.status.success() {
        bail!(
            "`{what}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("stdout of `{what}` is not UTF-8"))
}
