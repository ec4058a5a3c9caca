//! Reading a JSON request body into an API's own types, with an error that names the field at
//! fault: its path in the body, and for a field the API does not define, that it is unknown.

use serde::de::DeserializeOwned;
use switchyard_actors::error::GatewayError;

/// A body that did not parse: the path of the problem and serde's message.
#[derive(Debug)]
pub struct BodyError {
    /// Where in the body (`messages[0].role`; `.` for the body as a whole).
    pub path: String,
    /// What serde said.
    pub message: String,
}

impl BodyError {
    /// The field serde names in an "unknown field `…`" error.
    pub fn unknown_field(&self) -> Option<&str> {
        let rest = self.message.strip_prefix("unknown field `")?;
        rest.split_once('`').map(|(name, _)| name)
    }

    /// The 400 that names the field.
    pub fn into_gateway(self) -> GatewayError {
        if let Some(name) = self.unknown_field() {
            let message = format!("`{name}` is not a field the gateway knows there");
            return GatewayError::invalid(self.path, message);
        }
        let field = if self.path == "." { "body".to_owned() } else { self.path };
        GatewayError::invalid(field, self.message)
    }
}

/// Deserializes `T`, keeping the path of any problem.
pub fn deserialize<'de, T: serde::Deserialize<'de>, D: serde::Deserializer<'de>>(deserializer: D) -> Result<T, BodyError>
where
    D::Error: std::fmt::Display,
{
    serde_path_to_error::deserialize(deserializer).map_err(|error| BodyError { path: error.path().to_string(), message: error.into_inner().to_string() })
}

/// Deserializes `T` from a JSON body. A body that parses takes the plain way; only one that
/// does not is read again with the path tracked, to name where the problem is (tracking every
/// field costs a good part of a parse, and nearly every body parses).
pub fn from_slice<'de, T: serde::Deserialize<'de>>(body: &'de [u8]) -> Result<T, BodyError> {
    match serde_json::from_slice(body) {
        Ok(value) => Ok(value),
        Err(plain) => match deserialize::<T, _>(&mut serde_json::Deserializer::from_slice(body)) {
            Err(error) => Err(error),
            Ok(_) => Err(BodyError { path: ".".into(), message: plain.to_string() }),
        },
    }
}

/// Reads `body` as `T`, or the 400 that names the field at fault.
pub fn read<T: DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    from_slice(body).map_err(BodyError::into_gateway)
}
