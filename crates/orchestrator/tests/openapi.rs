//! The orchestrator's OpenAPI document lists exactly the routes its router serves (the router
//! walked through its own description).

use std::net::SocketAddr;

use distriqueue_broker::{Broker, InProcessBroker};
use distriqueue_orchestrator::{router, Orchestrator, OrchestratorConfig};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_lists_every_route_the_router_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = OrchestratorConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.path().to_path_buf(),
        ..OrchestratorConfig::default()
    };
    let node = Orchestrator::start(config, Broker::InProcess(InProcessBroker::new()))
        .await
        .expect("starts");
    let served = distriqueue_testkit::router_routes(&format!("{:?}", router(node.handle())));
    let document =
        serde_json::to_value(distriqueue_orchestrator::openapi()).expect("the document as JSON");
    assert_eq!(served, distriqueue_testkit::openapi_routes(&document));
    assert_eq!(document["openapi"], "3.1.0");
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    node.run(shutdown).await.expect("clean stop");
}
