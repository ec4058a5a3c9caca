//! `switchyard.v1.Admin`: cost and budget queries over gRPC, guarded by the admin key. It parses
//! parameters with [`crate::admin`], asks the pipeline, and converts the reports to protobuf.

use std::sync::Arc;

use switchyard_actors::budget::{CostQuery, CostReport, NanoUsd};
use switchyard_actors::error::GatewayError;
use switchyard_actors::pipeline::Gateway;
use switchyard_proto::v1;
use switchyard_proto::v1::admin_server::AdminServer;
use switchyard_proto::v1::invalidate_cache_request::Target;
use tonic::{Request, Response, Status};

use crate::admin;
use crate::auth::bearer_of;
use crate::error::to_status;

/// The Admin service.
#[derive(Debug, Clone)]
pub struct AdminService {
    gateway: Arc<Gateway>,
}

impl AdminService {
    /// The tonic server for `gateway`.
    pub fn server(gateway: Arc<Gateway>) -> AdminServer<Self> {
        AdminServer::new(Self { gateway })
    }

    async fn ask<T>(&self, request: Request<T>, query: impl FnOnce(T) -> Result<CostQuery, GatewayError>) -> Result<CostReport, Status> {
        let headers = request.metadata().clone().into_headers();
        self.gateway.authenticate_admin(bearer_of(&headers)).map_err(|error| to_status(&error))?;
        let query = query(request.into_inner()).map_err(|error| to_status(&error))?;
        self.gateway.query(query).await.map_err(|error| to_status(&error))
    }
}

fn money(amount: NanoUsd) -> Option<v1::Money> {
    Some(v1::Money { usd: amount.as_usd(), nano_usd: amount.0 })
}

fn optional(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

fn unexpected(report: &CostReport) -> Status {
    Status::internal(format!("unexpected report {report:?}"))
}

#[tonic::async_trait]
impl v1::admin_server::Admin for AdminService {
    async fn get_daily_cost(&self, request: Request<v1::DailyCostRequest>) -> Result<Response<v1::DailyCostResponse>, Status> {
        match self.ask(request, |request| admin::daily(optional(&request.date))).await? {
            CostReport::Daily { date, total, requests, unknown_price_requests, estimated_requests } => {
                Ok(Response::new(v1::DailyCostResponse {
                    date: date.to_string(),
                    total: money(total),
                    requests,
                    unknown_price_requests,
                    estimated_requests,
                }))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn get_cost_by_model(&self, request: Request<v1::CostRangeRequest>) -> Result<Response<v1::CostByModelResponse>, Status> {
        let query = |request: v1::CostRangeRequest| {
            let (start, end) = admin::range(optional(&request.start), optional(&request.end))?;
            Ok(CostQuery::ByModel { start, end })
        };
        match self.ask(request, query).await? {
            CostReport::ByModel(models) => Ok(Response::new(v1::CostByModelResponse {
                models: models.into_iter().map(|(model, cost)| v1::ModelCost { model, cost: money(cost) }).collect(),
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn get_cost_by_user(&self, request: Request<v1::CostRangeRequest>) -> Result<Response<v1::CostByUserResponse>, Status> {
        let query = |request: v1::CostRangeRequest| {
            let (start, end) = admin::range(optional(&request.start), optional(&request.end))?;
            let limit = if request.limit == 0 { admin::DEFAULT_LIMIT } else { request.limit as usize };
            Ok(CostQuery::ByUser { start, end, limit })
        };
        match self.ask(request, query).await? {
            CostReport::ByUser(users) => Ok(Response::new(v1::CostByUserResponse {
                users: users.into_iter().map(|((tenant, user), cost)| v1::UserCost { tenant, user, cost: money(cost) }).collect(),
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn get_cost_by_tenant(&self, request: Request<v1::CostRangeRequest>) -> Result<Response<v1::CostByTenantResponse>, Status> {
        let query = |request: v1::CostRangeRequest| {
            let (start, end) = admin::range(optional(&request.start), optional(&request.end))?;
            Ok(CostQuery::ByTenant { start, end })
        };
        match self.ask(request, query).await? {
            CostReport::ByTenant(tenants) => Ok(Response::new(v1::CostByTenantResponse {
                tenants: tenants.into_iter().map(|(tenant, cost)| v1::TenantCost { tenant, cost: money(cost) }).collect(),
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn get_cost_by_feature(&self, request: Request<v1::CostRangeRequest>) -> Result<Response<v1::CostByFeatureResponse>, Status> {
        let query = |request: v1::CostRangeRequest| {
            let (start, end) = admin::range(optional(&request.start), optional(&request.end))?;
            Ok(CostQuery::ByFeature { start, end })
        };
        match self.ask(request, query).await? {
            CostReport::ByFeature(features) => Ok(Response::new(v1::CostByFeatureResponse {
                features: features.into_iter().map(|(feature, cost)| v1::FeatureCost { feature, cost: money(cost) }).collect(),
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn get_cache_savings(&self, request: Request<v1::CostRangeRequest>) -> Result<Response<v1::CacheSavingsResponse>, Status> {
        let query = |request: v1::CostRangeRequest| {
            let (start, end) = admin::range(optional(&request.start), optional(&request.end))?;
            Ok(CostQuery::Savings { start, end })
        };
        match self.ask(request, query).await? {
            CostReport::Savings { total, saved, requests } => {
                Ok(Response::new(v1::CacheSavingsResponse { total: money(total), saved: money(saved), requests }))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn invalidate_cache(&self, request: Request<v1::InvalidateCacheRequest>) -> Result<Response<v1::InvalidateCacheResponse>, Status> {
        let headers = request.metadata().clone().into_headers();
        self.gateway.authenticate_admin(bearer_of(&headers)).map_err(|error| to_status(&error))?;
        let what = match request.into_inner().target {
            Some(Target::Key(key)) => admin::invalidation(Some(&key), None, None, false),
            Some(Target::Tenant(tenant)) => admin::invalidation(None, Some(&tenant), None, false),
            Some(Target::Model(model)) => admin::invalidation(None, None, Some(&model), false),
            Some(Target::All(all)) => admin::invalidation(None, None, None, all),
            None => admin::invalidation(None, None, None, false),
        }
        .map_err(|error| to_status(&error))?;
        self.gateway.invalidate(&what).await.map_err(|error| to_status(&error))?;
        Ok(Response::new(v1::InvalidateCacheResponse {}))
    }

    async fn get_experiments(&self, request: Request<v1::ExperimentsRequest>) -> Result<Response<v1::ExperimentsResponse>, Status> {
        let headers = request.metadata().clone().into_headers();
        self.gateway.authenticate_admin(bearer_of(&headers)).map_err(|error| to_status(&error))?;
        let experiments = self
            .gateway
            .experiments()
            .report()
            .into_iter()
            .map(|experiment| v1::ExperimentReport {
                name: experiment.name,
                route: experiment.route,
                variants: experiment
                    .variants
                    .into_iter()
                    .map(|variant| {
                        let stats = variant.stats;
                        v1::ExperimentVariant {
                            name: variant.name,
                            model: variant.model,
                            weight: variant.weight,
                            requests: stats.requests,
                            errors: stats.errors,
                            mean_latency_ms: stats.latency_total.as_secs_f64() * 1000.0 / stats.requests.max(1) as f64,
                            cost: money(stats.cost),
                            cache_hits: stats.cache_hits,
                        }
                    })
                    .collect(),
                rolled_back: experiment.rolled_back.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(v1::ExperimentsResponse { experiments }))
    }

    async fn set_experiment_weights(
        &self,
        request: Request<v1::SetExperimentWeightsRequest>,
    ) -> Result<Response<v1::SetExperimentWeightsResponse>, Status> {
        let headers = request.metadata().clone().into_headers();
        self.gateway.authenticate_admin(bearer_of(&headers)).map_err(|error| to_status(&error))?;
        let request = request.into_inner();
        let weights: Vec<(String, u32)> = request.weights.into_iter().collect();
        self.gateway.experiments().set_weights(&request.experiment, &weights).map_err(|error| to_status(&error))?;
        Ok(Response::new(v1::SetExperimentWeightsResponse {}))
    }

    async fn cluster_status(&self, request: Request<v1::ClusterStatusRequest>) -> Result<Response<v1::ClusterStatusResponse>, Status> {
        let headers = request.metadata().clone().into_headers();
        self.gateway.authenticate_admin(bearer_of(&headers)).map_err(|error| to_status(&error))?;
        Ok(Response::new(crate::cluster::to_proto(self.gateway.cluster_status())))
    }

    async fn check_budget(&self, request: Request<v1::CheckBudgetRequest>) -> Result<Response<v1::CheckBudgetResponse>, Status> {
        let query = |request: v1::CheckBudgetRequest| admin::budget(optional(&request.tenant), optional(&request.user));
        match self.ask(request, query).await? {
            CostReport::Budget(lines) => Ok(Response::new(v1::CheckBudgetResponse {
                budgets: lines
                    .into_iter()
                    .map(|line| v1::BudgetState {
                        scope: line.scope.to_string(),
                        period: line.period.as_str().to_owned(),
                        period_key: line.period_key.clone(),
                        spent: money(line.spent),
                        reserved: money(line.reserved),
                        limit: line.limit.and_then(money),
                        remaining: line.remaining().and_then(money),
                        exhausted: line.exhausted(),
                        resets_at: chrono::DateTime::<chrono::Utc>::from_timestamp_millis(line.resets_at_ms)
                            .map(|at| at.to_rfc3339())
                            .unwrap_or_default(),
                    })
                    .collect(),
            })),
            other => Err(unexpected(&other)),
        }
    }
}
