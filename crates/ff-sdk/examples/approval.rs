//! A human-approval workflow: `ff serve` running, then
//! `FF_URL=http://127.0.0.1:9090 FF_API_TOKEN=... cargo run -p ff-sdk --example approval`.
//! The handler asks for approval and suspends; the approver (here, the same program) signals
//! with the waitpoint's token alone; the same attempt runs again and reads the decision.
use std::time::Duration;

use ff_core::{DeliverSignalArgs, PendingWaitpoint};
use ff_sdk::{Client, HandlerError, HttpTransport, SubmitRequest, TaskContext, Worker, WorkerConfig};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

async fn publish(ctx: TaskContext<UnboundedSender<PendingWaitpoint>>, post: String) -> Result<String, HandlerError> {
    if let Some(decision) = ctx.signals().await?.pop() {
        return Ok(format!("{post}: {}", String::from_utf8_lossy(&decision.payload.unwrap_or_default())));
    }
    let wp = ctx.create_waitpoint("approval", Duration::from_secs(24 * 3600)).await?;
    ctx.state().send(wp.clone())?; // In real life: e-mail a link carrying the id and the token.
    Err(HandlerError::suspend_on(&wp, "decision"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("FF_URL").unwrap_or_else(|_| "http://127.0.0.1:9090".into());
    let client = Client::new(&url)?.with_token(std::env::var("FF_API_TOKEN").unwrap_or_default());
    let (inbox, mut requests) = unbounded_channel();
    let worker = Worker::new(HttpTransport::new(client.clone()), WorkerConfig::new("editor", ["posts"])?, inbox)
        .handle("publish", publish)
        .start()
        .await?;
    let id = client.submit(&SubmitRequest::json("posts", "publish", "hello.md".into())).await?.execution_id();
    let wp = requests.recv().await.ok_or("the handler asks for approval")?;
    let mut decision = DeliverSignalArgs::new(id, wp.waitpoint_id, "decision", "user", "ann");
    (decision.waitpoint_token, decision.payload) = (Some(wp.hmac_token), Some(b"approved by ann".to_vec()));
    Client::new(&url)?.signal(&decision).await?; // The approver needs no API token.
    while client.result(&id).await?.is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("{}", String::from_utf8(client.result(&id).await?.unwrap_or_default())?);
    println!("{:?}", worker.shutdown().await);
    Ok(())
}
