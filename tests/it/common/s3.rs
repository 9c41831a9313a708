//! An S3-compatible server in the test process (`s3s-fs`: objects as files
//! in a temporary directory), checking each request's SigV4 signature
//! against one key pair, as S3 does. It records every request's method,
//! path and query, so a test can see a multipart upload happen.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub const ACCESS_KEY: &str = "relay-test-access";
pub const SECRET_KEY: &str = "relay-test-secret-key";

pub struct S3Server {
    /// `http://127.0.0.1:<port>`, for `endpoint`.
    pub endpoint: String,
    /// Where the objects are: `<root>/<bucket>/<key>`.
    pub root: PathBuf,
    requests: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl S3Server {
    /// A server holding one empty bucket, `bucket`.
    pub async fn start(bucket: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        std::fs::create_dir(root.join(bucket)).unwrap();
        let fs = s3s_fs::FileSystem::new(&root).unwrap();
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (service, seen) = (service.clone(), seen.clone());
                tokio::spawn(async move {
                    let recording = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            seen.lock()
                                .unwrap()
                                .push(format!("{} {}", req.method(), req.uri()));
                            let service = service.clone();
                            async move { hyper::service::Service::call(&service, req).await }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), recording)
                    .await;
                });
            }
        });
        S3Server {
            endpoint,
            root,
            requests,
            _dir: dir,
        }
    }

    /// Every request so far, as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}
