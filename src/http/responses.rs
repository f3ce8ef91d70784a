//! The error responses of the OpenAPI document, shared by every handler's annotation
//! (`responses((status = 200, …), Unauthorized, NotFound)`): each is a status, its description
//! and the `ErrorEnvelope` body.

use std::collections::BTreeMap;

use utoipa::{
    IntoResponses,
    openapi::{
        ContentBuilder, Ref, RefOr, ResponseBuilder,
        header::HeaderBuilder,
        response::Response,
        schema::{ObjectBuilder, Type},
    },
};

/// An error response: `status`, its description, the `ErrorEnvelope` body, and headers.
pub fn error_response(
    status: u16,
    description: &str,
    headers: &[(&str, &str)],
) -> BTreeMap<String, RefOr<Response>> {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
            .build(),
    );
    for (name, about) in headers {
        response = response.header(
            *name,
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .description(Some(*about))
                .build(),
        );
    }
    BTreeMap::from([(status.to_string(), response.build().into())])
}

/// The error responses handlers share; listed in `responses(...)` of each annotation.
macro_rules! error_responses {
    ($($(#[$doc:meta])* $name:ident = $status:literal, $description:literal $(, $header:literal: $about:literal)*;)*) => {$(
        $(#[$doc])*
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                error_response($status, $description, &[$(($header, $about)),*])
            }
        }
    )*};
}

error_responses! {
    /// Malformed input the handler reads: JSON that does not parse, is not an object or names
    /// a key twice in one object, a query string or path that is not valid UTF-8, a header
    /// that must come once sent twice (`Idempotency-Key`).
    BadRequest = 400, "Malformed request: a body that is not the JSON expected (or not JSON at all, or an object that names a key twice), a query string or path that cannot be decoded, or an `Idempotency-Key` header sent more than once";
    /// Any route behind `Caller` / `OpsCaller`.
    Unauthorized = 401, "No bearer token, or one that is invalid or expired",
        "WWW-Authenticate": "`Bearer`";
    /// Routes behind `OpsCaller`.
    Forbidden = 403, "The token's role is not `ops`";
    /// An id (or name) in the path that names nothing; ids that are not ids name nothing too.
    NotFound = 404, "Nothing has this id";
    /// A field that is missing, of the wrong type or out of range: every one in `errors`.
    Invalid = 422, "Invalid field(s): each is listed in `errors` with what is wrong";
    /// Routes that read a JSON body: one over `extract::MAX_BODY_BYTES`.
    TooLarge = 413, "The body is larger than 2 MiB";
    /// Routes that read a JSON body: one that does not arrive within `HTTP_BODY_TIMEOUT_SECS`.
    BodyTimeout = 408, "The body did not arrive in time (`HTTP_BODY_TIMEOUT_SECS`)";
    /// Routes with a path parameter and no other input: a parameter refused as text (a NUL
    /// character; see `extract::Path`).
    BadPathParameter = 422, "A path parameter that is refused (it contains a NUL character)";
    /// The unauthenticated query-string sends (`PUBLIC_SEND_ENDPOINTS=true`).
    RateLimited = 429, "Too many unauthenticated sends from this address (`PUBLIC_SEND_RATE_PER_MINUTE`)",
        "Retry-After": "seconds until the next send is accepted";
    /// Any route that reads or writes the database.
    Unavailable = 503, "The database is unavailable; try again shortly";
}
