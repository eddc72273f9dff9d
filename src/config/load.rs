//! The one way every command reads the config file. What differs between commands is how
//! much they check, so that is the only choice left to them.

use super::{Config, ConfigError};
use std::path::Path;

/// How a command uses the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigUse {
    /// The agent: validated, and the private key file checked (see [`Config::load`]).
    Agent,
    /// A tool that acts on the config's remotes or checks (`check-remote`, `diagnose`):
    /// validated; `node.name` from `$NODE_NAME`, else this stand-in.
    Tool { node_name: &'static str },
    /// A command that only finds what the agent made (`status`, `cleanup`): parsed, not
    /// validated, so it still works with a config the validator refuses.
    Lenient,
}

/// Reads the config at `path` for `usage`. Errors name the file.
pub fn read(path: &Path, usage: ConfigUse) -> Result<Config, ConfigError> {
    if usage == ConfigUse::Agent {
        return Config::load(path);
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let env = std::env::var("NODE_NAME").ok();
    match usage {
        ConfigUse::Tool { node_name } => {
            Config::parse(&text, Some(env.as_deref().unwrap_or(node_name)))
        }
        _ => Config::parse_lenient(&text, env.as_deref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_reads_what_the_validator_refuses_and_tools_do_not() {
        let dir = std::env::temp_dir().join(format!("sdn-config-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("config.yaml");
        // Parses, but invalid: the service CIDR overlaps the pod CIDR.
        std::fs::write(
            &p,
            "cluster: {name: east, podCIDRs: [10.0.0.0/8], serviceCIDRs: [10.0.0.0/16]}\n\
             node: {name: n1}\ntunnel: {device: sdnx0}\n",
        )
        .unwrap();
        let c = read(&p, ConfigUse::Lenient).unwrap();
        assert_eq!(c.tunnel.device, "sdnx0");
        assert!(read(&p, ConfigUse::Tool { node_name: "t" }).is_err());
        assert!(read(&p, ConfigUse::Agent).is_err());
        let missing = dir.join("missing.yaml");
        let e = read(&missing, ConfigUse::Lenient).unwrap_err().to_string();
        assert!(e.contains("missing.yaml"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
