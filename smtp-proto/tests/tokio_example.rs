//! The tokio example serves a real peer: Python's smtplib sends it a message over loopback.

#[path = "../examples/tokio_server.rs"]
#[allow(dead_code)]
mod example;

use smtp_proto::server::Config;
use std::process::Command;

#[tokio::test(flavor = "current_thread")]
async fn python_smtplib_sends_a_message_to_the_tokio_example() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        example::serve_connection(stream, Config::new("tokio.test")).await.unwrap()
    });
    let script = format!(
        r#"
import smtplib
with smtplib.SMTP("127.0.0.1", {port}, timeout=20) as s:
    s.ehlo("client.test")
    assert s.has_extn("pipelining") and s.has_extn("8bitmime"), s.esmtp_features
    refused = s.sendmail("alice@client.test", ["bob@tokio.test"], b"Subject: hi\r\n\r\n.leading dot\r\nline two\r\n")
    assert refused == {{}}, refused
"#
    );
    let client = tokio::task::spawn_blocking(move || Command::new("python3").arg("-c").arg(script).status());
    let status = client.await.unwrap().expect("python3 is installed");
    assert!(status.success(), "smtplib failed: {status}");
    let messages = tokio::time::timeout(std::time::Duration::from_secs(20), server).await.unwrap().unwrap();
    assert_eq!(messages, vec![b"Subject: hi\r\n\r\n.leading dot\r\nline two\r\n".to_vec()]);
}
