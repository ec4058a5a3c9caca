//! `switchyard.v1.Batches`: batch jobs over gRPC, the twin of the HTTP Files and Batch APIs. It
//! authenticates, converts between protobuf and [`crate::batch`]'s types, and nothing more.

use std::sync::Arc;

use switchyard_actors::error::GatewayError;
use switchyard_actors::pipeline::Gateway;
use switchyard_actors::tenancy::Principal;
use switchyard_proto::v1;
use switchyard_proto::v1::batches_server::BatchesServer;
use tonic::{Request, Response, Status};

use crate::auth::bearer_of;
use crate::batch::model::{BatchRecord, CHAT_ENDPOINT, COMPLETION_WINDOW, FileRecord};
use crate::batch::{Batches, CreateBatch};
use crate::error::to_status;

/// The Batches service.
#[derive(Debug, Clone)]
pub struct BatchService {
    gateway: Arc<Gateway>,
    batches: Arc<Batches>,
}

impl BatchService {
    /// The tonic server, taking uploads up to `batch.max_file_bytes`.
    pub fn server(gateway: Arc<Gateway>, batches: Arc<Batches>) -> BatchesServer<Self> {
        let largest = batches.settings().max_file_bytes.saturating_add(64 * 1024);
        BatchesServer::new(Self { gateway, batches }).max_decoding_message_size(largest).max_encoding_message_size(largest)
    }

    fn principal<T>(&self, request: &Request<T>) -> Result<Arc<Principal>, Status> {
        let headers = request.metadata().clone().into_headers();
        self.gateway.authenticate(bearer_of(&headers)).map_err(|error| to_status(&error))
    }
}

fn file(record: FileRecord) -> v1::File {
    v1::File { id: record.id, bytes: record.bytes, created_at: record.created_at, filename: record.filename, purpose: record.purpose }
}

fn batch(record: BatchRecord) -> v1::Batch {
    let counts = record.request_counts;
    v1::Batch {
        id: record.id,
        endpoint: record.endpoint,
        input_file_id: record.input_file_id,
        completion_window: record.completion_window,
        status: record.status.as_str().into(),
        output_file_id: record.output_file_id.unwrap_or_default(),
        error_file_id: record.error_file_id.unwrap_or_default(),
        created_at: record.created_at,
        in_progress_at: record.in_progress_at.unwrap_or_default(),
        expires_at: record.expires_at,
        finalizing_at: record.finalizing_at.unwrap_or_default(),
        completed_at: record.completed_at.unwrap_or_default(),
        failed_at: record.failed_at.unwrap_or_default(),
        expired_at: record.expired_at.unwrap_or_default(),
        cancelling_at: record.cancelling_at.unwrap_or_default(),
        cancelled_at: record.cancelled_at.unwrap_or_default(),
        request_counts: Some(v1::RequestCounts { total: counts.total, completed: counts.completed, failed: counts.failed }),
        metadata: record.metadata.unwrap_or_default().into_iter().collect(),
        errors: record
            .errors
            .into_iter()
            .map(|error| v1::BatchError { code: error.code, message: error.message, param: error.param.unwrap_or_default(), line: error.line.unwrap_or_default() })
            .collect(),
    }
}

fn status(error: &GatewayError) -> Status {
    to_status(error)
}

#[tonic::async_trait]
impl v1::batches_server::Batches for BatchService {
    async fn upload_file(&self, request: Request<v1::UploadFileRequest>) -> Result<Response<v1::File>, Status> {
        let principal = self.principal(&request)?;
        let upload = request.into_inner();
        let record = self.batches.upload_file(&principal, upload.filename, &upload.purpose, upload.content.into()).await.map_err(|error| status(&error))?;
        Ok(Response::new(file(record)))
    }

    async fn get_file(&self, request: Request<v1::GetFileRequest>) -> Result<Response<v1::File>, Status> {
        let principal = self.principal(&request)?;
        let record = self.batches.file(&principal, &request.into_inner().id).await.map_err(|error| status(&error))?;
        Ok(Response::new(file(record)))
    }

    async fn get_file_content(&self, request: Request<v1::GetFileRequest>) -> Result<Response<v1::FileContent>, Status> {
        let principal = self.principal(&request)?;
        let (record, content) = self.batches.file_content(&principal, &request.into_inner().id).await.map_err(|error| status(&error))?;
        Ok(Response::new(v1::FileContent { file: Some(file(record)), content: content.to_vec() }))
    }

    async fn create_batch(&self, request: Request<v1::CreateBatchRequest>) -> Result<Response<v1::Batch>, Status> {
        let principal = self.principal(&request)?;
        let create = request.into_inner();
        let or_default = |value: String, default: &str| if value.is_empty() { default.to_owned() } else { value };
        let create = CreateBatch {
            input_file_id: create.input_file_id,
            endpoint: or_default(create.endpoint, CHAT_ENDPOINT),
            completion_window: or_default(create.completion_window, COMPLETION_WINDOW),
            metadata: (!create.metadata.is_empty()).then(|| create.metadata.into_iter().collect()),
        };
        let record = self.batches.create(&principal, create).await.map_err(|error| status(&error))?;
        Ok(Response::new(batch(record)))
    }

    async fn get_batch(&self, request: Request<v1::GetBatchRequest>) -> Result<Response<v1::Batch>, Status> {
        let principal = self.principal(&request)?;
        let record = self.batches.batch(&principal, &request.into_inner().id).await.map_err(|error| status(&error))?;
        Ok(Response::new(batch(record)))
    }

    async fn list_batches(&self, request: Request<v1::ListBatchesRequest>) -> Result<Response<v1::ListBatchesResponse>, Status> {
        let principal = self.principal(&request)?;
        let list = request.into_inner();
        let limit = if list.limit == 0 { 20 } else { list.limit as usize };
        if limit > 100 {
            return Err(status(&GatewayError::invalid("limit", format!("{limit} is outside 1 ..= 100"))));
        }
        let after = (!list.after.is_empty()).then_some(list.after.as_str());
        let page = self.batches.list(&principal, after, limit).await.map_err(|error| status(&error))?;
        Ok(Response::new(v1::ListBatchesResponse { data: page.batches.into_iter().map(batch).collect(), has_more: page.has_more }))
    }

    async fn cancel_batch(&self, request: Request<v1::GetBatchRequest>) -> Result<Response<v1::Batch>, Status> {
        let principal = self.principal(&request)?;
        let record = self.batches.cancel(&principal, &request.into_inner().id).await.map_err(|error| status(&error))?;
        Ok(Response::new(batch(record)))
    }
}
