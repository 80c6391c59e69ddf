//! The OpenAPI documents of both HTTP roles as files: `docs/api-spec.yaml` (the gateway) and
//! `docs/orchestrator-api-spec.yaml`, made from the routes' own annotations (the same documents
//! the servers serve at `/api/v3/api-docs`); `distriqueue openapi` prints them and a test fails
//! when a committed file is stale.

use crate::config::Role;

/// The OpenAPI document of `role` (gateway or orchestrator) as YAML; `None` for a role without
/// an HTTP API.
///
/// Errors: the document cannot be rendered as YAML.
pub fn yaml(role: Role) -> Result<Option<String>, Box<dyn std::error::Error + Send + Sync>> {
    let document = match role {
        Role::Gateway => distriqueue_gateway::openapi(),
        Role::Orchestrator => distriqueue_orchestrator::openapi(),
        Role::Worker => return Ok(None),
    };
    Ok(Some(document.to_yaml()?))
}

/// The committed file of `role`'s document.
pub fn committed_file(role: Role) -> Option<&'static str> {
    match role {
        Role::Gateway => Some("docs/api-spec.yaml"),
        Role::Orchestrator => Some("docs/orchestrator-api-spec.yaml"),
        Role::Worker => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/api-spec.yaml` and `docs/orchestrator-api-spec.yaml` are what the code makes today.
    #[test]
    fn committed_documents_are_up_to_date() {
        for role in [Role::Gateway, Role::Orchestrator] {
            let file = committed_file(role).expect("an HTTP role");
            let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            let made = yaml(role).expect("renders").expect("an HTTP role");
            assert!(
                committed == made,
                "{file} is stale: run `cargo run -- openapi {role} > {file}`"
            );
        }
    }
}
