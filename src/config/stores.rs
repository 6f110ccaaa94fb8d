//! `[stores.NAME]`: file, Vault (with its auth), AWS and GCP.

use super::*;

/// One `[stores.NAME]`; `key` is `stores.NAME`.
pub(super) fn store(p: &mut Problems, key: &str, raw: RawStore) -> StoreConfig {
    match raw {
        RawStore::File { path } => {
            if path.is_empty() {
                p.push(format!("{key}.path"), "a file or directory path");
            }
            StoreConfig::File(FileConfig { path: path.into() })
        }
        RawStore::Vault {
            address,
            mount,
            kv_version,
            auth,
            namespace,
            ca_cert,
        } => {
            let address = p.url(&format!("{key}.address"), Some(address), "");
            let kv_version = match kv_version {
                None => 2,
                Some(v @ (1 | 2)) => v as u8,
                Some(_) => {
                    p.push(format!("{key}.kv_version"), "1 or 2");
                    2
                }
            };
            StoreConfig::Vault(VaultConfig {
                address,
                mount: mount.unwrap_or_else(|| "secret".into()),
                kv_version,
                auth: vault_auth(auth),
                namespace,
                ca_cert: ca_cert.map(PathBuf::from),
            })
        }
        RawStore::AwsSecretsManager {
            region,
            endpoint_url,
        } => StoreConfig::AwsSecretsManager(AwsConfig {
            region,
            endpoint_url: endpoint_url.map(|u| p.url(&format!("{key}.endpoint_url"), Some(u), "")),
        }),
        RawStore::GcpSecretManager { project, endpoint } => {
            if project.is_empty() {
                p.push(format!("{key}.project"), "a GCP project id");
            }
            StoreConfig::GcpSecretManager(GcpConfig {
                project,
                endpoint: endpoint.map(|u| p.url(&format!("{key}.endpoint"), Some(u), "")),
            })
        }
    }
}

/// A Vault store's `auth = {...}`, with its defaults.
pub(super) fn vault_auth(auth: RawVaultAuth) -> VaultAuth {
    match auth {
        RawVaultAuth::Token { token_file } => VaultAuth::Token {
            token_file: token_file.map(PathBuf::from),
        },
        RawVaultAuth::Approle {
            role_id_file,
            secret_id_file,
            mount,
        } => VaultAuth::AppRole {
            role_id_file: role_id_file.into(),
            secret_id_file: secret_id_file.into(),
            mount: mount.unwrap_or_else(|| "approle".into()),
        },
        RawVaultAuth::Kubernetes {
            role,
            jwt_file,
            mount,
        } => VaultAuth::Kubernetes {
            role,
            jwt_file: jwt_file
                .unwrap_or_else(|| "/var/run/secrets/kubernetes.io/serviceaccount/token".into())
                .into(),
            mount: mount.unwrap_or_else(|| "kubernetes".into()),
        },
    }
}
