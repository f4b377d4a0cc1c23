//! How a command prints its result: for people, or as JSON. Every command
//! that takes `--json` prints through [`Output::print`].
use serde::Serialize;

/// The form a command's result is printed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Text for people, as the command renders it.
    Human,
    /// The result itself as JSON (pretty-printed), for scripts.
    Json,
}

impl Output {
    /// [`Output::Json`] when `--json` was given.
    pub fn json_if(json: bool) -> Self {
        if json {
            Self::Json
        } else {
            Self::Human
        }
    }

    /// Prints `value` on standard output: as JSON, or as the text `human`
    /// renders from it (printed as is: end it with a newline).
    pub fn print<T: Serialize + ?Sized>(
        self,
        value: &T,
        human: impl FnOnce(&T) -> String,
    ) -> anyhow::Result<()> {
        match self {
            Self::Json => println!("{}", serde_json::to_string_pretty(value)?),
            Self::Human => print!("{}", human(value)),
        }
        Ok(())
    }
}
