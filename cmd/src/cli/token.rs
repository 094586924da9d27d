//! [`Token`]: a bearer token from the command line or the environment,
//! parsed so that neither `Debug` nor an error ever shows it.

/// A bearer token; its `Debug` never shows the token.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// The token text, for the `Authorization` header only.
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl std::str::FromStr for Token {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err("the token is empty".to_string());
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token has characters a header cannot carry \
                        (only visible ASCII is allowed)"
                .to_string());
        }
        Ok(Token(text.to_string()))
    }
}

/// Parses a [`Token`] with an error that never shows it: clap's own
/// "invalid value '…'" would print the token it refuses (a stray newline at
/// its end is enough to be refused).
#[derive(Clone)]
pub(super) struct TokenParser;

impl clap::builder::TypedValueParser for TokenParser {
    type Value = Token;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Token, clap::Error> {
        let why = match value.to_str() {
            Some(text) => match text.parse::<Token>() {
                Ok(token) => return Ok(token),
                Err(why) => why,
            },
            None => "the token is not UTF-8".to_string(),
        };
        let option = arg.and_then(clap::Arg::get_long).unwrap_or("token");
        let from = arg
            .and_then(clap::Arg::get_env)
            .map(|env| format!(" (or {})", env.to_string_lossy()))
            .unwrap_or_default();
        let message = format!(
            "--{option}{from}: {why}; a space or a line end around it is enough (the token is \
             not shown)\n"
        );
        Err(clap::Error::raw(clap::error::ErrorKind::ValueValidation, message).with_cmd(cmd))
    }
}
