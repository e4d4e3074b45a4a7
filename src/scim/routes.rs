//! HTTP routes of the SCIM endpoint, served under `/scim/v2` and `/api/v3/scim2`.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Extension, Router,
    body::Bytes,
    extract::{FromRequestParts, Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::get,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use super::{
    ScimJson,
    error::{ScimError, ScimType},
    filter::Filter,
    patch::{self, PatchRequest},
    schemas::{self, MAX_PAGE_SIZE, USER_SCHEMA},
    store::UserStore,
    user::{self, FIELD_MANAGER},
};
use crate::{
    crd::{CleanmailUser, CleanmailUserSpec},
    tenant::{Tenant, TenantRegistry},
};

/// How often a read-modify-write is retried when another writer changed the user in between.
const WRITE_ATTEMPTS: usize = 5;
/// The SCIM roots this endpoint answers on: the RFC-style path and the Cleanmail tenant-URL form.
pub const SCIM_ROOTS: [&str; 2] = ["/scim/v2", "/api/v3/scim2"];

/// What every SCIM handler shares.
#[derive(Clone)]
pub struct ScimState {
    pub client: Client,
    pub users: UserStore,
    pub tenants: TenantRegistry,
}

#[derive(Clone, Copy)]
struct Root(&'static str);

/// The SCIM router with both roots.
pub fn router(state: ScimState) -> Router {
    let state = Arc::new(state);
    let mut router = Router::new();
    for root in SCIM_ROOTS {
        router = router.nest(root, scim_routes().layer(Extension(Root(root))));
    }
    router.layer(axum::middleware::map_response(super::error::ensure_scim_error_body)).with_state(state)
}

fn scim_routes() -> Router<Arc<ScimState>> {
    Router::new()
        .route("/Users", get(users_list).post(users_create))
        .route("/Users/{id}", get(user_get).put(user_replace).patch(user_patch).delete(user_delete))
        .route("/ServiceProviderConfig", get(service_provider_config))
        .route("/Schemas", get(schemas_list))
        .route("/Schemas/{id}", get(schema_get))
        .route("/ResourceTypes", get(resource_types_list))
        .route("/ResourceTypes/{id}", get(resource_type_get))
        .fallback(|| async { ScimError::not_found("no such SCIM endpoint") })
        .method_not_allowed_fallback(|| async {
            ScimError::new(StatusCode::METHOD_NOT_ALLOWED, None, "method not allowed on this endpoint")
        })
}

type ScimResult<T = Response> = Result<T, ScimError>;

/// The tenant the request's bearer token belongs to.
struct Authenticated(Arc<Tenant>);

impl FromRequestParts<Arc<ScimState>> for Authenticated {
    type Rejection = ScimError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<ScimState>) -> ScimResult<Self> {
        if !(state.users.is_ready() && state.tenants.is_ready()) {
            return Err(ScimError::unavailable("the endpoint is starting; retry shortly"));
        }
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token);
        token.and_then(|token| state.tenants.authenticate(token)).map(Authenticated).ok_or_else(ScimError::unauthorized)
    }
}

/// The SCIM root as the client addressed it, for `meta.location`.
struct BaseUrl(String);

impl<S: Send + Sync> FromRequestParts<S> for BaseUrl {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let root = parts.extensions.get::<Root>().copied().unwrap_or(Root(SCIM_ROOTS[0]));
        Ok(BaseUrl(base_url(&parts.headers, root)))
    }
}

fn base_url(headers: &HeaderMap, root: Root) -> String {
    let header =
        |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(|v| v.split(',').next().unwrap_or(v).trim());
    let scheme = header("x-forwarded-proto").unwrap_or("http");
    let host = header("x-forwarded-host").or_else(|| header("host")).unwrap_or("localhost");
    format!("{scheme}://{host}{}", root.0)
}

fn parse_json(body: &Bytes) -> ScimResult<Value> {
    serde_json::from_slice(body).map_err(|error| {
        ScimError::bad_request(ScimType::InvalidSyntax, format!("the request body is not valid JSON: {error}"))
    })
}

// === Users ===

async fn users_list(
    State(state): State<Arc<ScimState>>,
    Authenticated(tenant): Authenticated,
    BaseUrl(base): BaseUrl,
    Query(params): Query<HashMap<String, String>>,
) -> ScimResult {
    let param = |name: &str| params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    let start_index = parse_number(param("startIndex"), "startIndex")?.unwrap_or(1).max(1) as usize;
    let count =
        parse_number(param("count"), "count")?.map_or(MAX_PAGE_SIZE, |c| c.clamp(0, MAX_PAGE_SIZE as i64) as usize);
    let namespace = &tenant.namespace;
    let matched: Vec<Value> = match param("filter").map(str::trim).filter(|f| !f.is_empty()) {
        // Without a filter only the requested page is rendered.
        None => {
            let all = state.users.all(namespace);
            let total = all.len();
            let page = all.iter().skip(start_index - 1).take(count).map(|u| user::to_scim(u, &base)).collect();
            return Ok(ScimJson(schemas::list_response(page, total, start_index)).into_response());
        }
        Some(text) => {
            let filter: Filter = text.parse()?;
            let candidates = if let Some(user_name) = filter.eq_lookup("userName") {
                state.users.by_user_name(namespace, user_name)
            } else if let Some(external_id) = filter.eq_lookup("externalId") {
                state.users.by_external_id(namespace, external_id)
            } else if let Some(id) = filter.eq_lookup("id") {
                state.users.get(namespace, id).into_iter().collect()
            } else {
                state.users.all(namespace)
            };
            let schema = schemas::UserSchema;
            candidates.iter().map(|u| user::to_scim(u, &base)).filter(|r| filter.matches(r, &schema)).collect()
        }
    };
    let total = matched.len();
    let page: Vec<Value> = matched.into_iter().skip(start_index - 1).take(count).collect();
    Ok(ScimJson(schemas::list_response(page, total, start_index)).into_response())
}

fn parse_number(value: Option<&str>, name: &str) -> ScimResult<Option<i64>> {
    value
        .map(|v| {
            v.trim().parse::<i64>().map_err(|_| {
                ScimError::bad_request(ScimType::InvalidValue, format!("{name} must be an integer, not {v:?}"))
            })
        })
        .transpose()
}

async fn users_create(
    State(state): State<Arc<ScimState>>,
    Authenticated(tenant): Authenticated,
    BaseUrl(base): BaseUrl,
    body: Bytes,
) -> ScimResult {
    let spec = user::spec_from_scim(&parse_json(&body)?)?;
    check_domain(&tenant, &spec)?;
    ensure_unique(&state, &tenant, &spec, None)?;
    let created = create_user(&state, &tenant, spec).await?;
    state.users.apply(created.clone());
    let resource = user::to_scim(&created, &base);
    let mut response = (StatusCode::CREATED, ScimJson(resource.clone())).into_response();
    if let Some(location) = resource["meta"]["location"].as_str().and_then(|l| HeaderValue::from_str(l).ok()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Creates the resource under a name derived from `userName`. The API server's create is the
/// cluster-wide uniqueness check: of two identical concurrent POSTs (on any replica) exactly one
/// wins. A name still held by a renamed or terminating user gets a random suffix instead.
async fn create_user(state: &ScimState, tenant: &Tenant, spec: CleanmailUserSpec) -> ScimResult<CleanmailUser> {
    let api: Api<CleanmailUser> = Api::namespaced(state.client.clone(), &tenant.namespace);
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    let base_name = user::object_name(&spec.user_name);
    let mut name = base_name.clone();
    for _ in 0..WRITE_ATTEMPTS {
        let object = CleanmailUser::new(&name, spec.clone());
        match api.create(&params, &object).await {
            Ok(created) => return Ok(created),
            Err(kube::Error::Api(status)) if status.is_already_exists() => {
                let holder = api.get_opt(&name).await.map_err(api_error)?;
                if let Some(holder) = holder.filter(|h| h.metadata.deletion_timestamp.is_none())
                    && holder.spec.user_name.eq_ignore_ascii_case(&spec.user_name)
                {
                    state.users.apply(holder);
                    return Err(duplicate(&spec.user_name));
                }
                name = format!("{base_name}-{}", random_suffix());
            }
            Err(error) => return Err(api_error(error)),
        }
    }
    Err(ScimError::unavailable("could not find a free resource name; retry"))
}

fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..6].to_string()
}

fn duplicate(user_name: &str) -> ScimError {
    ScimError::uniqueness(format!("a user with userName {user_name:?} already exists"))
}

fn check_domain(tenant: &Tenant, spec: &CleanmailUserSpec) -> ScimResult<()> {
    if tenant.allows(&spec.user_name) {
        return Ok(());
    }
    Err(ScimError::bad_request(
        ScimType::InvalidValue,
        format!(
            "userName {:?} is not a mail address in this tenant's domains ({})",
            spec.user_name,
            tenant.domains.join(", ")
        ),
    ))
}

/// Refuses a `userName` another user of the tenant already has (case-insensitively).
fn ensure_unique(state: &ScimState, tenant: &Tenant, spec: &CleanmailUserSpec, id: Option<&str>) -> ScimResult<()> {
    let holders = state.users.by_user_name(&tenant.namespace, &spec.user_name);
    if holders.iter().any(|holder| Some(holder.name_any().as_str()) != id) {
        return Err(duplicate(&spec.user_name));
    }
    Ok(())
}

async fn user_get(
    State(state): State<Arc<ScimState>>,
    Authenticated(tenant): Authenticated,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
) -> ScimResult {
    let current = find_user(&state, &tenant, &id).await?;
    Ok(ScimJson(user::to_scim(&current, &base)).into_response())
}

/// The user with this id: from the read model, else from the API server (a write by another
/// replica may not have reached this replica's watch yet).
async fn find_user(state: &ScimState, tenant: &Tenant, id: &str) -> ScimResult<Arc<CleanmailUser>> {
    if let Some(user) = state.users.get(&tenant.namespace, id) {
        return Ok(user);
    }
    let not_found = || ScimError::not_found(format!("user {id} not found"));
    if !is_object_name(id) {
        return Err(not_found());
    }
    let api: Api<CleanmailUser> = Api::namespaced(state.client.clone(), &tenant.namespace);
    let user = api.get_opt(id).await.map_err(api_error)?.filter(|u| u.metadata.deletion_timestamp.is_none());
    let user = user.ok_or_else(not_found)?;
    state.users.apply(user.clone());
    Ok(Arc::new(user))
}

async fn user_replace(
    State(state): State<Arc<ScimState>>,
    Authenticated(tenant): Authenticated,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
    body: Bytes,
) -> ScimResult {
    let body = parse_json(&body)?;
    let updated = update_user(&state, &tenant, &id, |_| user::spec_from_scim(&body)).await?;
    Ok(ScimJson(user::to_scim(&updated, &base)).into_response())
}

async fn user_patch(
    State(state): State<Arc<ScimState>>,
    Authenticated(tenant): Authenticated,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
    body: Bytes,
) -> ScimResult {
    let request: PatchRequest = serde_json::from_value(parse_json(&body)?)
        .map_err(|error| ScimError::bad_request(ScimType::InvalidSyntax, format!("not a SCIM PatchOp: {error}")))?;
    let updated = update_user(&state, &tenant, &id, |current| {
        let mut resource = user::spec_to_scim(current);
        resource["id"] = json!(id);
        let patched = patch::apply(&resource, &request, &schemas::UserSchema)?;
        user::spec_from_scim(&patched)
    })
    .await?;
    Ok(ScimJson(user::to_scim(&updated, &base)).into_response())
}

/// Read-modify-write of a user's spec with optimistic concurrency: the change is computed from the
/// current spec and written only if nobody changed the user in between; otherwise it is recomputed.
/// A failing change writes nothing.
async fn update_user(
    state: &ScimState,
    tenant: &Tenant,
    id: &str,
    change: impl Fn(&CleanmailUserSpec) -> ScimResult<CleanmailUserSpec>,
) -> ScimResult<Arc<CleanmailUser>> {
    let api: Api<CleanmailUser> = Api::namespaced(state.client.clone(), &tenant.namespace);
    let mut current = find_user(state, tenant, id).await?;
    for _ in 0..WRITE_ATTEMPTS {
        let desired = change(&current.spec)?;
        if desired == current.spec {
            return Ok(current);
        }
        check_domain(tenant, &desired)?;
        if !desired.user_name.eq_ignore_ascii_case(&current.spec.user_name) {
            ensure_unique(state, tenant, &desired, Some(id))?;
        }
        let old = serde_json::to_value(&current.spec).map_err(internal)?;
        let new = serde_json::to_value(&desired).map_err(internal)?;
        let body = json!({
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "spec": user::merge_patch(&old, &new),
        });
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        match api.patch(id, &params, &Patch::Merge(&body)).await {
            Ok(updated) => {
                state.users.apply(updated.clone());
                return Ok(Arc::new(updated));
            }
            Err(kube::Error::Api(status)) if status.is_conflict() => {
                let fresh =
                    api.get_opt(id).await.map_err(api_error)?.filter(|u| u.metadata.deletion_timestamp.is_none());
                current = Arc::new(fresh.ok_or_else(|| ScimError::not_found(format!("user {id} not found")))?);
            }
            Err(kube::Error::Api(status)) if status.is_not_found() => {
                return Err(ScimError::not_found(format!("user {id} not found")));
            }
            Err(error) => return Err(api_error(error)),
        }
    }
    Err(ScimError::new(StatusCode::CONFLICT, None, "the user is being changed concurrently; retry"))
}

async fn user_delete(
    State(state): State<Arc<ScimState>>,
    Authenticated(tenant): Authenticated,
    Path(id): Path<String>,
) -> ScimResult {
    let current = find_user(&state, &tenant, &id).await?;
    let api: Api<CleanmailUser> = Api::namespaced(state.client.clone(), &tenant.namespace);
    match api.delete(&id, &DeleteParams::default()).await {
        Ok(either) => {
            match either {
                either::Either::Left(deleting) => state.users.apply(deleting),
                either::Either::Right(_) => state.users.delete(&current),
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Err(kube::Error::Api(status)) if status.is_not_found() => {
            Err(ScimError::not_found(format!("user {id} not found")))
        }
        Err(error) => Err(api_error(error)),
    }
}

/// Whether `id` can be a resource name at all (a DNS subdomain), so junk ids never reach the API server.
fn is_object_name(id: &str) -> bool {
    let bytes = id.as_bytes();
    !id.is_empty()
        && id.len() <= 253
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'.')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn api_error(error: kube::Error) -> ScimError {
    tracing::warn!(%error, "API server request failed");
    ScimError::unavailable("the resource store is unavailable; retry later")
}

fn internal(error: serde_json::Error) -> ScimError {
    ScimError::internal(format!("cannot encode the user: {error}"))
}

// === Discovery ===

async fn service_provider_config(_: Authenticated) -> ScimJson {
    ScimJson(schemas::service_provider_config())
}

async fn schemas_list(_: Authenticated) -> ScimJson {
    ScimJson(schemas::list_response(vec![schemas::user_schema()], 1, 1))
}

async fn schema_get(_: Authenticated, Path(id): Path<String>) -> ScimResult<ScimJson> {
    if id == USER_SCHEMA {
        Ok(ScimJson(schemas::user_schema()))
    } else {
        Err(ScimError::not_found(format!("schema {id} not found")))
    }
}

async fn resource_types_list(_: Authenticated) -> ScimJson {
    ScimJson(schemas::list_response(vec![schemas::user_resource_type()], 1, 1))
}

async fn resource_type_get(_: Authenticated, Path(id): Path<String>) -> ScimResult<ScimJson> {
    if id == "User" {
        Ok(ScimJson(schemas::user_resource_type()))
    } else {
        Err(ScimError::not_found(format!("resource type {id} not found")))
    }
}
