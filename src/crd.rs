//! The custom resources: `CleanmailUser` (one per provisioned identity) and `CleanmailTenant` (one
//! per namespace: who may provision, into which domains and which backend). Types only: no IO.

// Every printer column repeats `type_ = "string"`, which the lint mistakes for a duplicate.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::Condition};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Annotation that keeps a user's mailbox from being deleted: while it is `"true"`, SCIM refuses to
/// delete the user and a deleted user is held (Terminating) with its mailbox untouched.
pub const PROTECTED_ANNOTATION: &str = "cleanmail.ch/protected";
/// Label the SCIM endpoint puts on what it creates; resources without it were applied in the
/// cluster (kubectl, GitOps) and are not the SCIM client's to delete unless the tenant allows it.
pub const PROVISIONED_BY_LABEL: &str = "cleanmail.ch/provisioned-by";
/// The value of [`PROVISIONED_BY_LABEL`] on resources created through SCIM.
pub const PROVISIONED_BY_SCIM: &str = "scim";
/// Holds a user until its mailbox has been handled according to the deletion policy.
pub const USER_FINALIZER: &str = "cleanmail.ch/mailbox-cleanup";
/// Holds a group until its list has been removed from the backend.
pub const LIST_FINALIZER: &str = "cleanmail.ch/list-cleanup";

/// A mailbox identity provisioned through SCIM (usually by Microsoft Entra ID) or applied directly.
///
/// The spec holds the SCIM attributes exactly as the client sent them; the controller derives the mailbox account from it and reports progress in `status`.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cleanmail.ch",
    version = "v1alpha1",
    kind = "CleanmailUser",
    plural = "cleanmailusers",
    shortname = "cmu",
    category = "cleanmail",
    namespaced,
    status = "CleanmailUserStatus",
    doc = "A mailbox identity provisioned through SCIM or applied directly.",
    printcolumn(
        name = "User",
        type_ = "string",
        json_path = ".spec.userName",
        description = "SCIM userName (the mail address)"
    ),
    printcolumn(
        name = "Active",
        type_ = "boolean",
        json_path = ".spec.active",
        description = "Whether the identity is active in the identity provider"
    ),
    printcolumn(
        name = "State",
        type_ = "string",
        json_path = ".status.state",
        description = "The mailbox's effective state: Enabled, Disabled, or Suspended by an override"
    ),
    printcolumn(
        name = "Overridden",
        type_ = "string",
        json_path = ".status.overridden",
        description = "Which spec.overrides are in effect"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the mailbox account matches the spec"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why the mailbox is or is not ready"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct CleanmailUserSpec {
    /// SCIM `userName`: the user's mail address, unique per tenant compared case-insensitively, kept exactly as the client sent it.
    pub user_name: String,
    /// SCIM `active`: false disables the mailbox (mail is kept); true, or unassigned, enables it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// SCIM `externalId`: the identifier the provisioning client uses for this user (Entra maps `mailNickname` here). Compared case-sensitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// SCIM `displayName`: the name shown to people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// SCIM `name`: the components of the user's real name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<PersonName>,
    /// SCIM `nickName`: the casual way to address the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nick_name: Option<String>,
    /// SCIM `title`: the user's job title; Entra maps `jobTitle` here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// SCIM `preferredLanguage`, such as `de-CH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_language: Option<String>,
    /// SCIM `emails`: the user's mail addresses as the client describes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<Email>,
    /// SCIM `phoneNumbers`, stored exactly as sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phone_numbers: Vec<PhoneNumber>,
    /// SCIM `addresses`: physical mailing addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<Address>,
    /// The SCIM Enterprise User extension (`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User`).
    // Boxed, as are the overrides: both are rare, and every user in every replica's cache would
    // otherwise carry their full width inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enterprise_user: Option<Box<EnterpriseUser>>,
    /// Settings made in the cluster (kubectl, Argo CD, Flux) that win over what the SCIM client sent. SCIM neither shows nor changes them, so the identity provider and the overrides never undo each other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<Box<UserOverrides>>,
}

/// Cluster-side settings of a user that win over the identity provider's. Each field can be owned by a different field manager.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserOverrides {
    /// `false` suspends the mailbox even while the identity provider says active; `true` keeps it open after the identity provider disabled the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// The mailbox's storage quota, such as `10Gi`; replaces the tenant's default quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quantity>,
    /// Further addresses, in the tenant's domains, that deliver to this mailbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub aliases: Vec<String>,
    /// What happens to the mailbox when the user is deleted; replaces the tenant's policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
}

/// One phone number of a user (an element of SCIM `phoneNumbers`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhoneNumber {
    /// The number, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Its kind, such as `work`, `mobile` or `fax`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Whether this is the user's primary number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
}

/// One physical mailing address of a user (an element of SCIM `addresses`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    /// The full address, formatted for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formatted: Option<String>,
    /// Street, house number and further lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub street_address: Option<String>,
    /// City or locality.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// State or region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Postal code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// Country, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Its kind, such as `work` or `home`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Whether this is the user's primary address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
}

/// The SCIM Enterprise User extension attributes (RFC 7643 §4.3).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnterpriseUser {
    /// The identifier the organisation assigns to the user; Entra maps `employeeId` here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employee_number: Option<String>,
    /// The user's cost center.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_center: Option<String>,
    /// The user's organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// The user's division.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub division: Option<String>,
    /// The user's department.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// The user's manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<Manager>,
}

/// A reference to a user's manager (SCIM enterprise `manager`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Manager {
    /// The manager's SCIM id, as the client sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// The components of a person's name (SCIM `name`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersonName {
    /// The full name, formatted for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formatted: Option<String>,
    /// The given (first) name; Entra maps `givenName` here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    /// The family (last) name; Entra maps `surname` here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
}

/// One mail address of a user (an element of SCIM `emails`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Email {
    /// The address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Its kind, such as `work` or `home`; unique within a user.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Whether this is the user's primary address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
}

/// What the controller observed and did for a `CleanmailUser`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CleanmailUserStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions; `Ready` summarises whether the mailbox matches the spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The mailbox account this user maps to, once provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<MailboxRef>,
    /// The mailbox's effective state in one word: `Enabled`, `Disabled` (by the identity provider or an override) or `Suspended` (disabled by an override while the identity provider says active).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// What the mailbox follows: the SCIM attributes with the overrides and the tenant's defaults applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective: Option<EffectiveSettings>,
    /// The names of the `spec.overrides` fields in effect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overridden: Vec<String>,
}

/// The settings a mailbox follows after overrides and tenant defaults.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveSettings {
    /// Whether the mailbox is enabled.
    pub active: bool,
    /// The storage quota; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quantity>,
    /// The mailbox's further addresses, lower-cased.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// What happens to the mailbox when the user is deleted.
    pub deletion_policy: DeletionPolicy,
}

/// The mailbox account a user maps to in its tenant's backend.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MailboxRef {
    /// The backend's stable account id (the `CleanmailUser` uid).
    pub account_id: String,
    /// The mail address the account receives mail for.
    pub address: String,
    /// Whether the account is enabled (can log in and receive mail).
    pub enabled: bool,
}

/// A distribution list provisioned through SCIM as a group, or applied directly.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cleanmail.ch",
    version = "v1alpha1",
    kind = "CleanmailGroup",
    plural = "cleanmailgroups",
    shortname = "cmg",
    category = "cleanmail",
    namespaced,
    status = "CleanmailGroupStatus",
    doc = "A distribution list provisioned through SCIM as a group, or applied directly.",
    printcolumn(name = "Group", type_ = "string", json_path = ".spec.displayName", description = "SCIM displayName"),
    printcolumn(name = "Address", type_ = "string", json_path = ".status.address", description = "The list address"),
    printcolumn(
        name = "Members",
        type_ = "integer",
        json_path = ".status.memberCount",
        description = "How many members the list delivers to"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the list matches the spec"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why the list is or is not ready"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct CleanmailGroupSpec {
    /// SCIM `displayName`: the group's name, unique per tenant compared case-insensitively.
    pub display_name: String,
    /// SCIM `externalId`: the identifier the provisioning client uses for this group. Compared case-sensitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// SCIM `members`: the users whose mailboxes receive the list's mail, by SCIM id (the `CleanmailUser` name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<GroupMember>,
    /// The list's mail address; when absent, the display name made address-safe in the tenant's first domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// One member of a group (an element of SCIM `members`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupMember {
    /// The member's SCIM id: the name of a `CleanmailUser` in the same namespace.
    pub value: String,
    /// The member's display name, as the client sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

/// What the controller observed and did for a `CleanmailGroup`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CleanmailGroupStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions; `Ready` summarises whether the list matches the spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The list's mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// How many members resolve to a user of this namespace (disabled users included; they receive nothing).
    #[serde(default)]
    pub member_count: i64,
    /// Members naming no user of this namespace; they are left out of the list.
    #[serde(default)]
    pub unresolved_members: i64,
}

/// A tenant: one namespace whose `CleanmailUser` resources one SCIM client provisions.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cleanmail.ch",
    version = "v1alpha1",
    kind = "CleanmailTenant",
    plural = "cleanmailtenants",
    shortname = "cmt",
    category = "cleanmail",
    namespaced,
    status = "CleanmailTenantStatus",
    doc = "A SCIM tenant: its bearer tokens, mail domains, mailbox backend and deletion policy.",
    printcolumn(
        name = "Domains",
        type_ = "string",
        json_path = ".spec.domains",
        description = "Mail domains this tenant may provision"
    ),
    printcolumn(
        name = "Policy",
        type_ = "string",
        json_path = ".spec.deletionPolicy",
        description = "What happens to a mailbox when its user is deleted"
    ),
    printcolumn(
        name = "Orphans",
        type_ = "integer",
        json_path = ".status.orphanedAccounts",
        description = "Accounts in the tenant's domains that no user maps to"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the tenant can be used"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why the tenant is or is not usable"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct CleanmailTenantSpec {
    /// The Secret (in this namespace) whose values are the SCIM bearer tokens of this tenant. Every key counts, so a token is rotated by adding a key, switching the client, then removing the old key.
    pub token_secret_ref: SecretRef,
    /// The mail domains this tenant may provision; a `userName` in any other domain is refused.
    pub domains: Vec<String>,
    /// The mailbox backend; the operator's default backend when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendSpec>,
    /// What happens to a mailbox account when its user is deleted (a user's `spec.overrides.deletionPolicy` wins). Deleting the tenant or its namespace never deletes mailboxes on the tenant's policy: only a user's own override can.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// The storage quota of mailboxes whose user sets none in `spec.overrides.quota`, such as `5Gi`; no quota when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_quota: Option<Quantity>,
    /// Whether the SCIM client may delete users and groups it did not create (applied with kubectl or a GitOps tool, such as a shared mailbox). Off by default.
    #[serde(default)]
    pub scim_may_delete_applied_users: bool,
}

/// A reference to a Secret in the same namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// The Secret's name.
    pub name: String,
}

/// A reference to one key of a Secret in the same namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    pub name: String,
    /// The key within the Secret.
    pub key: String,
}

/// Which mailbox backend a tenant uses.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendSpec {
    /// A SQL mailbox database whose URL (`postgres://…` or `sqlite://…`) is stored in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<SqlBackendSpec>,
}

/// A SQL mailbox database.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SqlBackendSpec {
    /// The Secret key holding the database URL.
    pub url_secret_ref: SecretKeyRef,
}

/// What happens to a mailbox account when its user is deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// The account and its mail are removed.
    #[default]
    Delete,
    /// The account is left as it is, enabled or not, and no longer managed; a later user with its address adopts it.
    Retain,
    /// The account is disabled and kept with its mail, no longer managed; a later user with its address adopts it.
    Disable,
}

/// What the controller observed for a tenant.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CleanmailTenantStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions; `Ready` says whether the tenant can be used for provisioning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// How many accounts in the tenant's domains no user of this namespace maps to (retained, disabled or created outside the operator); they are reported, never deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphaned_accounts: Option<i64>,
    /// The first orphaned addresses, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphaned_addresses: Vec<String>,
}

/// `metav1.Condition` list as a list-map keyed by `type`, so server-side apply merges per condition.
fn conditions_schema(_: &mut schemars::generate::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "description": "Standard Kubernetes conditions, keyed by type.",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": { "type": "string", "format": "date-time", "description": "When the status last changed." },
                "message": { "type": "string", "description": "A human-readable explanation." },
                "observedGeneration": { "type": "integer", "format": "int64", "description": "The generation this condition was set for." },
                "reason": { "type": "string", "description": "A CamelCase reason for the status." },
                "status": { "type": "string", "enum": ["True", "False", "Unknown"], "description": "True, False or Unknown." },
                "type": { "type": "string", "description": "The condition type, such as Ready." }
            }
        }
    })
}

/// Every CRD this operator defines, in install order.
pub fn all_crds() -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    use kube::CustomResourceExt;
    vec![CleanmailTenant::crd(), CleanmailUser::crd(), CleanmailGroup::crd()]
}

/// Every CRD as one multi-document YAML stream, as committed under `crds/`.
pub fn to_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in all_crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
