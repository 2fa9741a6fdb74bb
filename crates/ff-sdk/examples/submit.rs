//! Submits one email for the `worker` example and waits for its result:
//! `FF_URL=http://127.0.0.1:9090 FF_API_TOKEN=... cargo run -p ff-sdk --example submit`.
use std::time::Duration;

use ff_core::PublicState;
use ff_sdk::{Client, SubmitRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("FF_URL").unwrap_or_else(|_| "http://127.0.0.1:9090".into());
    let client = Client::new(url)?.with_token(std::env::var("FF_API_TOKEN").unwrap_or_default());
    let input = serde_json::json!({"to": "ada@example.com", "subject": "hello"});
    let id = client.submit(&SubmitRequest::json("emails", "email.send", input)).await?.execution_id();
    println!("submitted {id}");
    loop {
        match client.state(&id).await? {
            Some(PublicState::Completed) => break,
            Some(state) if state.is_terminal() => return Err(format!("ended as {state:?}").into()),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let result = client.result(&id).await?.unwrap_or_default();
    println!("result: {}", String::from_utf8_lossy(&result));
    Ok(())
}
