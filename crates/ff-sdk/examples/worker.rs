//! A complete worker: `ff serve` (or `ff demo`) running, then
//! `FF_URL=http://127.0.0.1:9090 FF_API_TOKEN=... cargo run -p ff-sdk --example worker`.
use ff_sdk::{Client, HandlerError, HttpTransport, TaskContext, Worker, WorkerConfig};

#[derive(serde::Deserialize)]
struct Email {
    to: String,
    subject: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("FF_URL").unwrap_or_else(|_| "http://127.0.0.1:9090".into());
    let client = Client::new(url)?.with_token(std::env::var("FF_API_TOKEN").unwrap_or_default());
    let report = Worker::new(HttpTransport::new(client), WorkerConfig::new("mailer", ["emails"])?, ())
        .handle("email.send", |ctx: TaskContext<()>, email: Email| async move {
            if !email.to.contains('@') {
                return Err(HandlerError::permanent(format!("bad address {:?}", email.to)));
            }
            ctx.progress(Some(50), Some("sending")).await?;
            ctx.append_frame("smtp", &format!("sent {:?} to {}", email.subject, email.to)).await?;
            Ok(serde_json::json!({ "delivered": true }))
        })
        .run_until(async { tokio::signal::ctrl_c().await.unwrap_or_default() })
        .await?;
    println!("{report:?}");
    Ok(())
}
