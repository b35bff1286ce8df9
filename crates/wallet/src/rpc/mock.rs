//! A fake node for tests: a real HTTP server on 127.0.0.1 answering JSON-RPC requests with
//! whatever the test's handler decides.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// What the fake node answers to one request.
pub(crate) enum Reply {
    /// A JSON-RPC success with this `result`.
    Result(Value),
    /// A JSON-RPC error object.
    Error {
        code: i64,
        message: &'static str,
        data: Option<Value>,
    },
    /// This HTTP status and body, verbatim.
    Raw { status: u16, body: String },
}

type Handler = dyn Fn(&str, &Value) -> Reply + Send + Sync;

/// A running fake node; it stops with the test process.
pub(crate) struct MockNode {
    pub(crate) url: String,
    requests: Arc<Mutex<Vec<Value>>>,
}

impl MockNode {
    /// Starts a node that answers each request with `handler(method, params)`.
    pub(crate) fn start(handler: impl Fn(&str, &Value) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let log = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (handler, log) = (Arc::clone(&handler), Arc::clone(&log));
                std::thread::spawn(move || serve(stream, &*handler, &log));
            }
        });
        Self { url, requests }
    }

    /// Every request received so far, in order.
    pub(crate) fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }
}

/// Serves requests on one connection until the client closes it.
fn serve(stream: TcpStream, handler: &Handler, log: &Mutex<Vec<Value>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut content_length = 0;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                content_length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body).unwrap();
        let request: Value = serde_json::from_slice(&body).unwrap();
        log.lock().unwrap().push(request.clone());
        let method = request["method"].as_str().unwrap_or_default();
        let (status, body) = match handler(method, &request["params"]) {
            Reply::Result(result) => (
                200,
                json!({ "jsonrpc": "2.0", "id": request["id"], "result": result }).to_string(),
            ),
            Reply::Error {
                code,
                message,
                data,
            } => {
                let mut error = json!({ "code": code, "message": message });
                if let Some(data) = data {
                    error["data"] = data;
                }
                (
                    200,
                    json!({ "jsonrpc": "2.0", "id": request["id"], "error": error }).to_string(),
                )
            }
            Reply::Raw { status, body } => (status, body),
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if writer
            .write_all(head.as_bytes())
            .and_then(|()| writer.write_all(body.as_bytes()))
            .is_err()
        {
            return;
        }
    }
}
