//! `toMarkdown` over HTTP: files in a multipart form, one result per file,
//! and the envelope's errors for a body that holds no files.

use serde_json::Value;

use crate::support::*;

async fn send(content_type: &str, body: Vec<u8>) -> (u16, Value) {
    post_body(&account_url("/ai/tomarkdown"), content_type, body).await
}

#[tokio::test]
async fn files_convert_one_by_one_and_empty_forms_are_refused() {
    let boundary = "mdboundary42";
    let part = |name: &str, data: &str| {
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n\r\n{data}\r\n"
        )
    };
    let body = format!(
        "{}{}{}--{boundary}--\r\n",
        part("notes.md", "# Notes\n\nPlain markdown."),
        part("table.csv", "a,b\n1,2\n"),
        part("movie.mkv", "..."),
    );
    let (status, v) = send(
        &format!("multipart/form-data; boundary={boundary}"),
        body.into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let results = v["result"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["data"], "# Notes\n\nPlain markdown.");
    assert_eq!(results[1]["data"], "| a | b |\n| --- | --- |\n| 1 | 2 |");
    assert_eq!(results[2]["format"], "error");
    assert!(
        results[2]["error"].as_str().unwrap_or("").contains("mkv"),
        "{v}"
    );

    let (status, v) = send(
        &format!("multipart/form-data; boundary={boundary}"),
        format!("--{boundary}--\r\n").into_bytes(),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = send("application/json", b"{}".to_vec()).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["errors"][0]["code"], 5006, "{v}");
}
