//! The protocol through typed messages: requests serialized from structs,
//! replies deserialized strictly (unknown fields refused), so the wire shape a
//! typed client relies on is pinned down.

mod common;

use common::{Fixture, Ws};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use server_ws::codes;
use tokio_tungstenite::tungstenite::Message;

#[derive(Serialize)]
struct Request<'a> {
    jsonrpc: &'static str,
    id: u64,
    method: &'static str,
    params: PlayParams<'a>,
}

#[derive(Serialize)]
struct PlayParams<'a> {
    script: &'a str,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Response {
    jsonrpc: String,
    id: Value,
    #[serde(default)]
    result: Option<PlayResult>,
    #[serde(default)]
    error: Option<RpcError>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlayResult {
    output: String,
    printed: String,
    task_id: String,
    run_time_ms: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RpcError {
    code: i64,
    message: String,
    #[serde(default)]
    data: Option<FailureData>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailureData {
    kind: String,
    line: Option<u32>,
    column: Option<u32>,
    task_id: String,
}

/// A minimal typed client: `play` over an open socket.
async fn typed_play(ws: &mut Ws, id: u64, script: &str) -> Response {
    let request = Request {
        jsonrpc: "2.0",
        id,
        method: "play",
        params: PlayParams { script },
    };
    let text = serde_json::to_string(&request).expect("serialize");
    ws.send(Message::text(text)).await.expect("send");
    loop {
        match ws.next().await.expect("open").expect("frame") {
            Message::Text(t) => {
                let response: Response = serde_json::from_str(t.as_str())
                    .unwrap_or_else(|e| panic!("reply {t} does not fit the typed shape: {e}"));
                assert_eq!(response.jsonrpc, "2.0");
                assert_eq!(response.id, Value::from(id));
                assert!(response.result.is_some() != response.error.is_some());
                return response;
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_client_gets_results_and_failures_in_their_documented_shape() {
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;

    let ok = typed_play(&mut ws, 1, "echo:42").await;
    let result = ok.result.expect("a result");
    assert_eq!(result.output, "42");
    assert_eq!(result.printed, "");
    assert!(!result.task_id.is_empty());
    assert!(result.run_time_ms.is_some());

    let failed = typed_play(&mut ws, 2, "fail:no such variable").await;
    let error = failed.error.expect("an error");
    assert_eq!(error.code, codes::SCRIPT_FAILED);
    assert_eq!(error.message, "no such variable");
    let data = error.data.expect("failure data");
    assert_eq!(data.kind.as_str(), "runtime");
    assert_eq!((data.line, data.column), (Some(1), Some(5)));
    assert!(!data.task_id.is_empty());
}
