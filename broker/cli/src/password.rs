//! Passwords for the command line: never a flag's value (it would stay in the shell's history
//! and in `ps`), but an environment variable, a prompt on the terminal without echo, or one
//! line of stdin when stdin is not a terminal.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, bail};

/// The environment variable `--user` takes its password from.
pub const PASSWORD_ENV: &str = "WEIR_PASSWORD";

/// The password of `user` for `--user`: `WEIR_PASSWORD`, else a prompt on the terminal.
pub fn for_login(user: &str) -> anyhow::Result<String> {
    if let Ok(password) = std::env::var(PASSWORD_ENV) {
        return Ok(password);
    }
    if !std::io::stdin().is_terminal() && !std::io::stderr().is_terminal() {
        bail!("--user {user} needs its password in {PASSWORD_ENV}, or a terminal to prompt on");
    }
    rpassword::prompt_password(format!("password for {user}: "))
        .context("cannot read the password from the terminal")
}

/// A new password for `user`: one line of stdin when stdin is not a terminal, else typed
/// twice at a prompt.
pub fn new_password(user: &str) -> anyhow::Result<String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("new password for {user}: "))
            .context("cannot read the password from the terminal")?;
        let again = rpassword::prompt_password("again: ")
            .context("cannot read the password from the terminal")?;
        if first != again {
            bail!("the passwords differ; nothing changed");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.is_empty() {
        bail!("the password is empty; nothing changed");
    }
    Ok(password)
}
