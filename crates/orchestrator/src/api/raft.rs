//! The Raft RPCs between orchestrator nodes, the server side of `network.rs`: `POST
//! /raft/append`, `/raft/vote` and `/raft/snapshot` each hand the request to the local Raft and
//! answer its `Result` as JSON. Their bodies are openraft's own types, opaque to the OpenAPI
//! document.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::Json;
use distriqueue_core::api::ErrorBody;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::error::ApiError;
use super::read_body;
use crate::handle::OrchestratorHandle;
use crate::raft::{NodeId, TypeConfig};

/// The paths of the Raft RPCs begin with this.
pub(super) const PREFIX: &str = "/raft/";

/// `POST /raft/append`: AppendEntries from the leader.
#[utoipa::path(
    post,
    path = "/raft/append",
    tag = "raft",
    request_body(content = Object, description = "openraft's AppendEntriesRequest"),
    responses(
        (status = 200, description = "openraft's Result of AppendEntriesResponse or RaftError", body = Object),
        (status = 400, description = "Not an AppendEntries request", body = ErrorBody),
    )
)]
pub(crate) async fn append(
    State(handle): State<OrchestratorHandle>,
    body: Result<Json<AppendEntriesRequest<TypeConfig>>, JsonRejection>,
) -> Result<Json<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>>, ApiError> {
    let request = read_body(body, "the body must be an AppendEntries request")?;
    Ok(Json(handle.raft.append_entries(request).await))
}

/// `POST /raft/vote`: a candidate's vote request.
#[utoipa::path(
    post,
    path = "/raft/vote",
    tag = "raft",
    request_body(content = Object, description = "openraft's VoteRequest"),
    responses(
        (status = 200, description = "openraft's Result of VoteResponse or RaftError", body = Object),
        (status = 400, description = "Not a vote request", body = ErrorBody),
    )
)]
pub(crate) async fn vote(
    State(handle): State<OrchestratorHandle>,
    body: Result<Json<VoteRequest<NodeId>>, JsonRejection>,
) -> Result<Json<Result<VoteResponse<NodeId>, RaftError<NodeId>>>, ApiError> {
    let request = read_body(body, "the body must be a vote request")?;
    Ok(Json(handle.raft.vote(request).await))
}

/// `POST /raft/snapshot`: a chunk of the leader's snapshot.
#[utoipa::path(
    post,
    path = "/raft/snapshot",
    tag = "raft",
    request_body(content = Object, description = "openraft's InstallSnapshotRequest"),
    responses(
        (status = 200, description = "openraft's Result of InstallSnapshotResponse or RaftError", body = Object),
        (status = 400, description = "Not a snapshot request", body = ErrorBody),
    )
)]
pub(crate) async fn snapshot(
    State(handle): State<OrchestratorHandle>,
    body: Result<Json<InstallSnapshotRequest<TypeConfig>>, JsonRejection>,
) -> Result<
    Json<Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>>,
    ApiError,
> {
    let request = read_body(body, "the body must be a snapshot request")?;
    Ok(Json(handle.raft.install_snapshot(request).await))
}
