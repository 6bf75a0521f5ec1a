//! CLI side of the control socket (blocking; one request per connection).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::{ControlError, Request, Response};

pub fn call(path: &Path, req: &Request) -> Result<Response, ControlError> {
    let mut stream = UnixStream::connect(path).map_err(|source| ControlError::Connect {
        path: path.to_path_buf(),
        source,
    })?;
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    let mut bytes = serde_json::to_vec(req).map_err(|e| ControlError::Protocol(e.to_string()))?;
    bytes.push(b'\n');
    stream.write_all(&bytes).map_err(io)?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).map_err(io)?;
    let resp: Response =
        serde_json::from_str(&line).map_err(|e| ControlError::Protocol(e.to_string()))?;
    match resp {
        Response::Error { message } => Err(ControlError::Refused(message)),
        other => Ok(other),
    }
}
