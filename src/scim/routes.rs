//! HTTP routes of the SCIM endpoint, served under `/scim/v2` and `/api/v3/scim2`. The resource
//! handlers are written once over [`ScimResource`] and mounted for Users and Groups.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Extension, Router,
    body::Bytes,
    extract::{FromRequestParts, Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions as DeletePreconditions},
};
use serde_json::{Value, json};

use super::{
    ScimJson,
    error::{ScimError, ScimType},
    filter::Filter,
    patch::{self, PatchRequest},
    projection,
    resource::{
        self, FIELD_MANAGER, ScimResource, claimed_by_applier, etag_matches, merge_patch, object_name, spec_write,
        to_scim, version,
    },
    schemas::{self, MAX_PAGE_SIZE},
};
use crate::{
    cache::{GroupStore, ResourceStore, UserStore},
    crd::{CleanmailGroup, CleanmailUser, PROTECTED_ANNOTATION, PROVISIONED_BY_LABEL, PROVISIONED_BY_SCIM},
    tenant::{Tenant, TenantRegistry},
};

/// The largest request body accepted (a 10,000-member group PATCH is well below it).
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// How often a read-modify-write is retried when another writer changed the object in between.
const WRITE_ATTEMPTS: usize = 5;
/// The SCIM roots this endpoint answers on: the RFC-style path and the Cleanmail tenant-URL form.
pub const SCIM_ROOTS: [&str; 2] = ["/scim/v2", "/api/v3/scim2"];

/// What every SCIM handler shares.
#[derive(Clone)]
pub struct ScimState {
    pub client: Client,
    pub users: UserStore,
    pub groups: GroupStore,
    pub tenants: TenantRegistry,
}

/// The read model of each resource kind.
pub trait Stored: ScimResource {
    fn store(state: &ScimState) -> &ResourceStore<Self>;
}

impl Stored for CleanmailUser {
    fn store(state: &ScimState) -> &ResourceStore<Self> {
        &state.users
    }
}

impl Stored for CleanmailGroup {
    fn store(state: &ScimState) -> &ResourceStore<Self> {
        &state.groups
    }
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
    router
        // Refuses an announced oversized body before reading any of it.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(super::error::ensure_scim_error_body))
        .with_state(state)
}

fn scim_routes() -> Router<Arc<ScimState>> {
    Router::new()
        .route("/Users", get(list::<CleanmailUser>).post(create::<CleanmailUser>))
        .route(
            "/Users/{id}",
            get(read::<CleanmailUser>)
                .put(replace::<CleanmailUser>)
                .patch(modify::<CleanmailUser>)
                .delete(remove::<CleanmailUser>),
        )
        .route("/Groups", get(list::<CleanmailGroup>).post(create::<CleanmailGroup>))
        .route(
            "/Groups/{id}",
            get(read::<CleanmailGroup>)
                .put(replace::<CleanmailGroup>)
                .patch(modify::<CleanmailGroup>)
                .delete(remove::<CleanmailGroup>),
        )
        // Searching by POST (RFC 7644 §3.4.3) is optional and not offered.
        .route("/.search", post(search_not_implemented))
        .route("/Users/.search", post(search_not_implemented))
        .route("/Groups/.search", post(search_not_implemented))
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
        if !(state.users.is_ready() && state.groups.is_ready() && state.tenants.is_ready()) {
            return Err(ScimError::unavailable("the endpoint is starting; retry shortly"));
        }
        let token = crate::tenant::bearer_token(&parts.headers);
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

/// Query parameters, with names matched case-insensitively.
struct Params(HashMap<String, String>);

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn number(&self, name: &str) -> ScimResult<Option<i64>> {
        self.get(name)
            .map(|v| {
                v.trim().parse::<i64>().map_err(|_| {
                    ScimError::bad_request(ScimType::InvalidValue, format!("{name} must be an integer, not {v:?}"))
                })
            })
            .transpose()
    }

    /// Applies `attributes` / `excludedAttributes` to a representation of `K`.
    fn project<K: ScimResource>(&self, resource: Value) -> Value {
        let core_schema = K::resource_type().core.id;
        projection::project(resource, self.get("attributes"), self.get("excludedAttributes"), core_schema)
    }

    /// Whether the response needs `K`'s bulky attribute: asked by the same projection that shapes
    /// the response, on a probe holding nothing else but one value with every sub-attribute a
    /// multi-valued attribute has (RFC 7643 §2.4), so that `attributes=members.value` counts too.
    fn wants_bulky<K: ScimResource>(&self) -> bool {
        K::BULKY_ATTRIBUTE.is_none_or(|name| {
            let value = json!({"value": "", "display": "", "type": "", "primary": false, "$ref": ""});
            self.project::<K>(json!({ name: [value] })).get(name).is_some()
        })
    }

    fn shapes_response(&self) -> bool {
        self.get("attributes").is_some() || self.get("excludedAttributes").is_some()
    }
}

fn api<K: ScimResource>(state: &ScimState, tenant: &Tenant) -> Api<K> {
    Api::namespaced(state.client.clone(), &tenant.namespace)
}

// === Resources ===

async fn list<K: Stored>(
    State(state): State<Arc<ScimState>>,
    Authenticated(tenant): Authenticated,
    BaseUrl(base): BaseUrl,
    Query(params): Query<HashMap<String, String>>,
) -> ScimResult {
    let params = Params(params);
    let start_index = params.number("startIndex")?.unwrap_or(1).max(1) as usize;
    let count = params.number("count")?.map_or(MAX_PAGE_SIZE, |c| c.clamp(0, MAX_PAGE_SIZE as i64) as usize);
    let store = K::store(&state);
    let namespace = &tenant.namespace;
    let bulky = params.wants_bulky::<K>();
    let render = |object: &Arc<K>| params.project::<K>(resource::render(object.as_ref(), &base, bulky));
    let Some(text) = params.get("filter").map(str::trim).filter(|f| !f.is_empty()) else {
        // Without a filter only the requested page is rendered.
        let (page, total) = store.page(namespace, start_index - 1, count);
        let page = page.iter().map(render).collect();
        return Ok(ScimJson(schemas::list_response(page, total, start_index)).into_response());
    };
    let filter: Filter = text.parse()?;
    let candidates = if let Some(key) = filter.eq_lookup(K::UNIQUE_ATTRIBUTE) {
        store.by_unique_key(namespace, key)
    } else if let Some(external_id) = filter.eq_lookup("externalId") {
        store.by_external_id(namespace, external_id)
    } else if let Some(id) = filter.eq_lookup("id") {
        store.get(namespace, id).into_iter().collect()
    } else {
        store.all(namespace)
    };
    let schema = K::resource_type();
    // A filter on the bulky attribute needs it rendered even when the response leaves it out.
    let bulky = bulky || K::BULKY_ATTRIBUTE.is_some_and(|name| text.to_lowercase().contains(&name.to_lowercase()));
    // Each candidate is rendered once, for the filter and for the page.
    let matched: Vec<Value> = candidates
        .iter()
        .map(|object| resource::render(object.as_ref(), &base, bulky))
        .filter(|resource| filter.matches(resource, schema))
        .collect();
    let total = matched.len();
    let page = matched.into_iter().skip(start_index - 1).take(count).map(|r| params.project::<K>(r)).collect();
    Ok(ScimJson(schemas::list_response(page, total, start_index)).into_response())
}

async fn create<K: Stored>(
    State(state): State<Arc<ScimState>>,
    Authenticated(tenant): Authenticated,
    BaseUrl(base): BaseUrl,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> ScimResult {
    let spec = K::spec_from_scim(&parse_json(&body)?)?;
    K::check(&tenant, &spec)?;
    ensure_unique::<K>(&state, &tenant, &spec, None)?;
    let created = create_object::<K>(&state, &tenant, spec).await?;
    K::store(&state).apply(created.clone());
    let resource = to_scim(&created, &base);
    let location = resource["meta"]["location"].as_str().and_then(|l| HeaderValue::from_str(l).ok());
    let mut response = (StatusCode::CREATED, ScimJson(Params(params).project::<K>(resource))).into_response();
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(with_etag(response, &created))
}

/// Creates the object under a name derived from its unique attribute. The API server's create is
/// the cluster-wide uniqueness check: of two identical concurrent POSTs (on any replica) exactly
/// one wins. A name still held by a renamed or terminating object gets a random suffix instead.
async fn create_object<K: Stored>(state: &ScimState, tenant: &Tenant, spec: K::Spec) -> ScimResult<K> {
    let api = api::<K>(state, tenant);
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    let base_name = object_name(K::unique_value(&spec));
    let mut name = base_name.clone();
    for _ in 0..WRITE_ATTEMPTS {
        let mut object = K::build(&name, spec.clone());
        object.meta_mut().labels = Some([(PROVISIONED_BY_LABEL.to_owned(), PROVISIONED_BY_SCIM.to_owned())].into());
        object.meta_mut().finalizers = Some(vec![K::FINALIZER.to_owned()]);
        match api.create(&params, &object).await {
            Ok(created) => return Ok(created),
            Err(kube::Error::Api(status)) if status.is_already_exists() => {
                let holder = api.get_opt(&name).await.map_err(api_error)?;
                if let Some(holder) = holder.filter(|h| h.meta().deletion_timestamp.is_none())
                    && holder.unique_key() == K::unique_value(&spec).to_lowercase()
                {
                    K::store(state).apply(holder);
                    return Err(duplicate::<K>(K::unique_value(&spec)));
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

fn duplicate<K: ScimResource>(value: &str) -> ScimError {
    ScimError::uniqueness(format!("a {} with {} {value:?} already exists", K::RESOURCE_TYPE, K::UNIQUE_ATTRIBUTE))
}

/// Refuses a unique attribute value another object of the tenant already has (case-insensitively).
fn ensure_unique<K: Stored>(state: &ScimState, tenant: &Tenant, spec: &K::Spec, id: Option<&str>) -> ScimResult<()> {
    let holders = K::store(state).by_unique_key(&tenant.namespace, K::unique_value(spec));
    if holders.iter().any(|holder| Some(holder.name_any().as_str()) != id) {
        return Err(duplicate::<K>(K::unique_value(spec)));
    }
    Ok(())
}

async fn read<K: Stored>(
    State(state): State<Arc<ScimState>>,
    Authenticated(tenant): Authenticated,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
    preconditions: Preconditions,
    Query(params): Query<HashMap<String, String>>,
) -> ScimResult {
    let current = find::<K>(&state, &tenant, &id).await?;
    if preconditions.unmodified_since_read(current.as_ref()) {
        return Ok(with_etag(StatusCode::NOT_MODIFIED.into_response(), current.as_ref()));
    }
    let params = Params(params);
    let resource = resource::render(current.as_ref(), &base, params.wants_bulky::<K>());
    let response = ScimJson(params.project::<K>(resource)).into_response();
    Ok(with_etag(response, current.as_ref()))
}

/// The object with this id: from the read model, else from the API server (a write by another
/// replica may not have reached this replica's watch yet).
async fn find<K: Stored>(state: &ScimState, tenant: &Tenant, id: &str) -> ScimResult<Arc<K>> {
    if let Some(object) = K::store(state).get(&tenant.namespace, id) {
        return Ok(object);
    }
    if !is_object_name(id) {
        return Err(not_found::<K>(id));
    }
    let object = api::<K>(state, tenant).get_opt(id).await.map_err(api_error)?;
    let object = object.filter(|o| o.meta().deletion_timestamp.is_none()).ok_or_else(|| not_found::<K>(id))?;
    K::store(state).apply(object.clone());
    Ok(Arc::new(object))
}

fn not_found<K: ScimResource>(id: &str) -> ScimError {
    ScimError::not_found(format!("{} {id} not found", K::RESOURCE_TYPE))
}

async fn replace<K: Stored>(
    State(state): State<Arc<ScimState>>,
    Authenticated(tenant): Authenticated,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
    preconditions: Preconditions,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> ScimResult {
    let body = parse_json(&body)?;
    let updated = update::<K>(&state, &tenant, &id, &preconditions, |_| K::spec_from_scim(&body)).await?;
    let response = ScimJson(Params(params).project::<K>(to_scim(updated.as_ref(), &base))).into_response();
    Ok(with_etag(response, updated.as_ref()))
}

/// PATCH answers 200 with the resource, or 204 where the resource type prefers it and the client
/// asked for no attributes.
async fn modify<K: Stored>(
    State(state): State<Arc<ScimState>>,
    Authenticated(tenant): Authenticated,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
    preconditions: Preconditions,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> ScimResult {
    let request: PatchRequest = serde_json::from_value(parse_json(&body)?)
        .map_err(|error| ScimError::bad_request(ScimType::InvalidSyntax, format!("not a SCIM PatchOp: {error}")))?;
    let updated = update::<K>(&state, &tenant, &id, &preconditions, |current| {
        let mut resource = K::spec_to_scim(current);
        resource["id"] = json!(id);
        let patched = patch::apply(&resource, &request, K::resource_type())?;
        K::spec_from_scim(&patched)
    })
    .await?;
    let params = Params(params);
    if K::PATCH_ANSWERS_NO_CONTENT && !params.shapes_response() {
        return Ok(with_etag(StatusCode::NO_CONTENT.into_response(), updated.as_ref()));
    }
    let response = ScimJson(params.project::<K>(to_scim(updated.as_ref(), &base))).into_response();
    Ok(with_etag(response, updated.as_ref()))
}

/// Read-modify-write of a spec with optimistic concurrency: the change is computed from the
/// current spec and written only if nobody changed the object in between; otherwise it is
/// recomputed. A failing change writes nothing.
async fn update<K: Stored>(
    state: &ScimState,
    tenant: &Tenant,
    id: &str,
    preconditions: &Preconditions,
    change: impl Fn(&K::Spec) -> ScimResult<K::Spec>,
) -> ScimResult<Arc<K>> {
    let api = api::<K>(state, tenant);
    let mut current = find::<K>(state, tenant, id).await?;
    for _ in 0..WRITE_ATTEMPTS {
        // Checked against the very version the write is conditional on, so it holds atomically.
        preconditions.check_write(current.as_ref())?;
        let desired = K::keep_cluster_fields(change(current.spec())?, current.spec());
        if &desired == current.spec() {
            return Ok(current);
        }
        K::check(tenant, &desired)?;
        if !K::unique_value(&desired).eq_ignore_ascii_case(K::unique_value(current.spec())) {
            ensure_unique::<K>(state, tenant, &desired, Some(id))?;
        }
        let old = serde_json::to_value(current.spec()).map_err(internal)?;
        let new = serde_json::to_value(&desired).map_err(internal)?;
        let spec_patch = merge_patch(&old, &new);
        let managed_fields = current.meta().managed_fields.as_deref().unwrap_or_default();
        if let Some((manager, path)) = claimed_by_applier(managed_fields, &spec_patch) {
            return Err(ScimError::bad_request(
                ScimType::Mutability,
                format!(
                    "{path} of {} {id} is set in the cluster by {manager:?}; change it there, not through SCIM",
                    K::RESOURCE_TYPE
                ),
            ));
        }
        let generation = current.meta().generation.unwrap_or_default();
        let body = spec_write(generation, &spec_patch, &new).map_err(internal)?;
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        match api.patch(id, &params, &Patch::Json::<()>(body)).await {
            Ok(updated) => {
                K::store(state).apply(updated.clone());
                return Ok(Arc::new(updated));
            }
            Err(kube::Error::Api(status)) if status.is_not_found() => return Err(not_found::<K>(id)),
            // The generation test failed: the spec changed since it was read; recompute from it.
            Err(kube::Error::Api(status)) if status.code == 422 => {
                let fresh = reread(&api, id).await?;
                if fresh.meta().generation == current.meta().generation {
                    return Err(refused_by_api_server(&status));
                }
                current = fresh;
            }
            Err(error) => return Err(api_error(error)),
        }
    }
    Err(changed_concurrently())
}

/// A change the API server's validation refused although the SCIM schema accepted it.
fn refused_by_api_server(status: &kube::core::Status) -> ScimError {
    ScimError::bad_request(ScimType::InvalidValue, format!("the change cannot be stored: {}", status.message))
}

async fn remove<K: Stored>(
    State(state): State<Arc<ScimState>>,
    Authenticated(tenant): Authenticated,
    Path(id): Path<String>,
    preconditions: Preconditions,
) -> ScimResult {
    let api = api::<K>(&state, &tenant);
    if !is_object_name(&id) {
        return Err(not_found::<K>(&id));
    }
    // Read fresh, not from the cache: the protection reads labels, which the cache does not keep.
    let mut current = reread(&api, &id).await?;
    for _ in 0..WRITE_ATTEMPTS {
        preconditions.check_write(current.as_ref())?;
        check_deletable(&tenant, current.as_ref())?;
        // The delete is conditional on the version just checked, so neither `If-Match` nor the
        // protection can be judged on a copy that missed a newer write (an annotation added a
        // moment ago); on a conflict both are checked again on the fresh object.
        let params = DeleteParams {
            preconditions: Some(DeletePreconditions {
                resource_version: current.meta().resource_version.clone(),
                uid: current.meta().uid.clone(),
            }),
            ..Default::default()
        };
        match api.delete(&id, &params).await {
            Ok(either::Either::Left(deleting)) => K::store(&state).apply(deleting),
            Ok(either::Either::Right(_)) => K::store(&state).delete(&current),
            Err(kube::Error::Api(status)) if status.is_not_found() => return Err(not_found::<K>(&id)),
            Err(kube::Error::Api(status)) if status.is_conflict() => {
                current = reread(&api, &id).await?;
                continue;
            }
            Err(error) => return Err(api_error(error)),
        }
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Err(changed_concurrently())
}

/// Refuses to delete what the cluster protects: a resource annotated as protected, and one that
/// was applied in the cluster rather than created through SCIM (unless the tenant allows it).
fn check_deletable<K: ScimResource>(tenant: &Tenant, object: &K) -> ScimResult<()> {
    let forbidden = |why: String| Err(ScimError::new(StatusCode::FORBIDDEN, None, why));
    let id = object.name_any();
    if object.annotations().get(PROTECTED_ANNOTATION).is_some_and(|v| v == "true") {
        return forbidden(format!(
            "{} {id} is protected from deletion (annotation {PROTECTED_ANNOTATION}); remove the annotation in the cluster first",
            K::RESOURCE_TYPE
        ));
    }
    let provisioned = object.labels().get(PROVISIONED_BY_LABEL).is_some_and(|v| v == PROVISIONED_BY_SCIM);
    if !provisioned && !tenant.scim_may_delete_applied_users {
        return forbidden(format!(
            "{} {id} was applied in the cluster, not created through SCIM, and the tenant does not let SCIM delete it",
            K::RESOURCE_TYPE
        ));
    }
    Ok(())
}

/// The object as the API server has it now, after a write lost a race with another writer.
async fn reread<K: Stored>(api: &Api<K>, id: &str) -> ScimResult<Arc<K>> {
    let fresh = api.get_opt(id).await.map_err(api_error)?;
    let fresh = fresh.filter(|o| o.meta().deletion_timestamp.is_none());
    Ok(Arc::new(fresh.ok_or_else(|| not_found::<K>(id))?))
}

fn changed_concurrently() -> ScimError {
    ScimError::new(StatusCode::CONFLICT, None, "the resource is being changed concurrently; retry")
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
    ScimError::internal(format!("cannot encode the resource: {error}"))
}

/// The `If-Match` / `If-None-Match` request headers (RFC 7644 §3.14).
struct Preconditions {
    if_match: Option<String>,
    if_none_match: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Preconditions {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let header = |name| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(Preconditions { if_match: header(header::IF_MATCH), if_none_match: header(header::IF_NONE_MATCH) })
    }
}

impl Preconditions {
    /// A write goes ahead only when `If-Match`, if given, names the current version.
    fn check_write<K: ScimResource>(&self, current: &K) -> ScimResult<()> {
        match &self.if_match {
            Some(wanted) if !etag_matches(wanted, &version(current)) => Err(ScimError::precondition_failed(format!(
                "{} {} is at version {}, not {wanted}",
                K::RESOURCE_TYPE,
                current.name_any(),
                version(current)
            ))),
            _ => Ok(()),
        }
    }

    /// Whether a read can answer 304 because the client holds the current version.
    fn unmodified_since_read<K: ScimResource>(&self, current: &K) -> bool {
        self.if_none_match.as_deref().is_some_and(|held| etag_matches(held, &version(current)))
    }
}

fn with_etag<K: ScimResource>(mut response: Response, object: &K) -> Response {
    if let Ok(tag) = HeaderValue::from_str(&version(object)) {
        response.headers_mut().insert(header::ETAG, tag);
    }
    response
}

// === Discovery ===

async fn search_not_implemented(_: Authenticated) -> ScimError {
    ScimError::new(StatusCode::NOT_IMPLEMENTED, None, "searching with POST is not supported; use GET with filter")
}

async fn service_provider_config(_: Authenticated) -> ScimJson {
    ScimJson(schemas::service_provider_config())
}

async fn schemas_list(_: Authenticated) -> ScimJson {
    let documents: Vec<Value> = schemas::all_schemas().map(|s| s.document()).collect();
    let total = documents.len();
    ScimJson(schemas::list_response(documents, total, 1))
}

async fn schema_get(_: Authenticated, Path(id): Path<String>) -> ScimResult<ScimJson> {
    let schema = schemas::all_schemas().find(|s| s.id.eq_ignore_ascii_case(&id));
    schema.map(|s| ScimJson(s.document())).ok_or_else(|| ScimError::not_found(format!("schema {id} not found")))
}

async fn resource_types_list(_: Authenticated) -> ScimJson {
    let documents: Vec<Value> = schemas::RESOURCE_TYPES.iter().map(|t| t.document()).collect();
    let total = documents.len();
    ScimJson(schemas::list_response(documents, total, 1))
}

async fn resource_type_get(_: Authenticated, Path(id): Path<String>) -> ScimResult<ScimJson> {
    let resource_type = schemas::RESOURCE_TYPES.iter().find(|t| t.name.eq_ignore_ascii_case(&id));
    resource_type
        .map(|t| ScimJson(t.document()))
        .ok_or_else(|| ScimError::not_found(format!("resource type {id} not found")))
}
