//! The exact bytes of a request body: webhook signatures are computed over
//! them, never over a re-serialised value.

/// Reads a webhook body as the exact bytes sent (signatures are computed
/// over them, never over a re-serialised value); 413 past `limit`.
pub async fn read(body: rocket::Data<'_>, limit: u64) -> Result<Vec<u8>, crate::error::AppError> {
    use rocket::data::ToByteUnit;
    let body = body.open(limit.bytes()).into_bytes().await.map_err(|e| {
        crate::error::AppError::InvalidPayload(format!("cannot read the body: {e}"))
    })?;
    if !body.is_complete() {
        return Err(crate::error::AppError::PayloadTooLarge(limit));
    }
    Ok(body.into_inner())
}
