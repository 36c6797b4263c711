//! Connects `ferrulectl` to the admin API over the control plane's Unix socket.

use std::path::{Path, PathBuf};

use ferrule_proto::admin::v1::admin_client::AdminClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// Opens a gRPC channel to the admin socket at `path`.
pub async fn connect(path: &Path) -> anyhow::Result<AdminClient<Channel>> {
    let path: PathBuf = path.to_path_buf();
    // The URI is required by tonic but unused: every connection goes to the socket.
    let channel = Endpoint::try_from("http://ferrule-admin.invalid")?
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await?;
    Ok(AdminClient::new(channel))
}
