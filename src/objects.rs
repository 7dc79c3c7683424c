//! Object storage through the `object_store` crate: where the prediction log's object-store
//! sink writes, where `inferd replay` reads, and where models may be fetched from.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{ClientConfigKey, ClientOptions, DynObjectStore, ObjectStoreScheme};

/// What a store is opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Listing and writing objects: S3, GCS, Azure or a folder.
    Bucket,
    /// Reading one object, which may also be a plain `https://` (or `http://`) URL, with each
    /// request, body included, allowed `timeout` (the default 30 s would cut a large model).
    Read { timeout: Duration },
}

/// The store and the path inside it that `url` names; credentials, region and endpoint from
/// the provider's environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
pub fn connect(url: &str, access: Access) -> io::Result<(Arc<DynObjectStore>, ObjectPath)> {
    let invalid = |e: &dyn std::fmt::Display| io::Error::new(io::ErrorKind::InvalidInput, format!("{url}: {e}"));
    let parsed = url::Url::parse(url).map_err(|e| invalid(&e))?;
    let (scheme, path) = ObjectStoreScheme::parse(&parsed).map_err(|e| invalid(&e))?;
    // Set through each builder's keys, after `from_env`, so that the client options the
    // environment gives (AWS_ALLOW_HTTP, say) are kept.
    let timeout = match access {
        Access::Read { timeout } => Some(format!("{}ms", timeout.as_millis().max(1))),
        Access::Bucket => None,
    };
    let client = |key: ClientConfigKey| timeout.clone().map(|t| (key, t));
    let store: Arc<DynObjectStore> = match scheme {
        ObjectStoreScheme::AmazonS3 => {
            let mut builder = AmazonS3Builder::from_env().with_url(url);
            if let Some((key, t)) = client(ClientConfigKey::Timeout) {
                builder = builder.with_config(AmazonS3ConfigKey::Client(key), t);
            }
            Arc::new(builder.build().map_err(|e| invalid(&e))?)
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            let mut builder = GoogleCloudStorageBuilder::from_env().with_url(url);
            if let Some((key, t)) = client(ClientConfigKey::Timeout) {
                builder = builder.with_config(GoogleConfigKey::Client(key), t);
            }
            Arc::new(builder.build().map_err(|e| invalid(&e))?)
        }
        ObjectStoreScheme::MicrosoftAzure => {
            let mut builder = MicrosoftAzureBuilder::from_env().with_url(url);
            if let Some((key, t)) = client(ClientConfigKey::Timeout) {
                builder = builder.with_config(AzureConfigKey::Client(key), t);
            }
            Arc::new(builder.build().map_err(|e| invalid(&e))?)
        }
        ObjectStoreScheme::Local => Arc::new(object_store::local::LocalFileSystem::new()),
        ObjectStoreScheme::Http if matches!(access, Access::Read { .. }) => {
            if parsed.query().is_some() || !parsed.username().is_empty() {
                return Err(invalid(&"a query string or credentials in an http(s) URL are not supported"));
            }
            let origin = &parsed[..url::Position::BeforePath];
            let mut options = ClientOptions::new().with_allow_http(parsed.scheme() == "http");
            if let Access::Read { timeout } = access {
                options = options.with_timeout(timeout);
            }
            Arc::new(HttpBuilder::new().with_url(origin).with_client_options(options).build().map_err(|e| invalid(&e))?)
        }
        _ => {
            let expected = match access {
                Access::Bucket => "an s3://, gs://, az:// or file:// URL",
                Access::Read { .. } => "an s3://, gs://, az://, https:// or file:// URL",
            };
            return Err(invalid(&format!("expected {expected}")));
        }
    };
    Ok((store, path))
}
