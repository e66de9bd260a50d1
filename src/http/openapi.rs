//! The OpenAPI 3.1 document, generated from the handlers' annotations and the response types.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{admin, audit, checkpoints, console, holds, ops, problem, sessions, tail};

#[derive(OpenApi)]
#[openapi(
    info(title = "chatledger", description = "Append-only, tamper-evident conversation ledger"),
    paths(
        sessions::append_messages,
        sessions::reset,
        sessions::get_session,
        sessions::list_messages,
        sessions::context,
        sessions::list_sessions,
        tail::events,
        audit::verify,
        audit::export,
        checkpoints::proof,
        checkpoints::latest,
        checkpoints::key,
        checkpoints::consistency,
        holds::erase,
        holds::place,
        holds::add_sessions,
        holds::release,
        holds::list,
        audit::search,
        audit::access_log,
        admin::create_tenant,
        admin::create_key,
        admin::list_keys,
        admin::revoke_key,
        admin::get_policy,
        admin::set_policy,
        ops::healthz,
        ops::readyz,
        super::observe::metrics,
        console::index,
        console::file,
    ),
    components(schemas(problem::Problem)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}
