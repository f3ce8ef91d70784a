//! The step between validation and storage for sends given as a template (README "Templates":
//! sending a template): [`complete`] renders every [`Pending`] message of a request — one
//! single send, or all the items of a batch at once — and leaves the others as they are.

use sqlx::PgPool;

use super::request::{Checked, NewMessage};
use crate::{
    error::{AppError, FieldError},
    templates::{
        recipient::Prefer,
        send::{self, Context},
    },
};

/// Each of `checked` as a message to store, or why its template cannot be sent (on its
/// fields), in order. One query for the templates and one or two for the recipients, however
/// many there are; none when no item is a template.
pub async fn complete(
    pool: &PgPool,
    cx: &Context,
    prefer: Prefer,
    checked: Vec<Checked>,
) -> sqlx::Result<Vec<Result<NewMessage, Vec<FieldError>>>> {
    let sends: Vec<(&str, &send::Request)> = checked
        .iter()
        .filter_map(|c| Some((c.to().as_str(), c.template()?)))
        .collect();
    let mut rendered = send::render(pool, cx, prefer, &sends).await?.into_iter();
    Ok(checked
        .into_iter()
        .map(|c| match c {
            Checked::Ready(m) => Ok(m),
            Checked::Template(p) => match rendered.next() {
                Some(Ok(r)) => Ok(p.rendered(r)),
                Some(Err(errors)) => Err(errors),
                None => Err(vec![FieldError::new(send::FIELD, "was not rendered")]),
            },
        })
        .collect())
}

/// One send, rendered if it is a template: `422` with the reasons when it cannot be sent.
pub async fn complete_one(
    pool: &PgPool,
    cx: &Context,
    prefer: Prefer,
    checked: Checked,
) -> Result<NewMessage, AppError> {
    if let Checked::Ready(m) = checked {
        return Ok(m);
    }
    match complete(pool, cx, prefer, vec![checked]).await?.pop() {
        Some(Ok(m)) => Ok(m),
        Some(Err(errors)) => Err(AppError::Validation(errors)),
        None => Err(AppError::validation(send::FIELD, "was not rendered")),
    }
}
