//! Stock moves on the `inventory` table: what orders and flash-sale events take and give back.
//! The conditions in the UPDATEs are what make overselling impossible.

use sqlx::MySqlConnection;

use crate::repo::RepoError;

/// Takes `quantity` units of a product if that many are in stock; false (and nothing changed)
/// otherwise. Two orders racing for the last unit serialize on the row lock and the second
/// matches no row.
pub async fn take_stock(
    tx: &mut MySqlConnection,
    product_id: u64,
    quantity: u32,
) -> Result<bool, RepoError> {
    let result = sqlx::query!(
        "UPDATE inventory SET stock = stock - ?, version = version + 1 \
         WHERE product_id = ? AND stock >= ?",
        quantity,
        product_id,
        quantity
    )
    .execute(tx)
    .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn return_stock(
    tx: &mut MySqlConnection,
    product_id: u64,
    quantity: u32,
) -> Result<(), RepoError> {
    sqlx::query!(
        "UPDATE inventory SET stock = stock + ?, version = version + 1 WHERE product_id = ?",
        quantity,
        product_id
    )
    .execute(tx)
    .await?;
    Ok(())
}
