//! The `products` and `inventory` tables. Every product has exactly one inventory row, created
//! in the same transaction; readers join them.

use rust_decimal::Decimal;
use sqlx::{MySql, MySqlConnection, MySqlExecutor, QueryBuilder};
use time::PrimitiveDateTime;

use crate::domain::money::Money;
use crate::domain::product::{
    Direction, NewProduct, Product, ProductChanges, ProductQuery, SortKey,
};
use crate::repo::RepoError;

/// A product row joined with its stock, as `query_as!` and the list query read it.
#[derive(sqlx::FromRow)]
struct ProductRow {
    id: u64,
    title: String,
    description: String,
    price: Decimal,
    stock: u32,
    created_at: PrimitiveDateTime,
    updated_at: PrimitiveDateTime,
}

impl TryFrom<ProductRow> for Product {
    type Error = RepoError;
    fn try_from(row: ProductRow) -> Result<Product, RepoError> {
        let price = Money::new(row.price).map_err(|e| super::decode_error("price", e))?;
        Ok(Product {
            id: row.id,
            title: row.title,
            description: row.description,
            price,
            stock: row.stock,
            created_at: row.created_at.assume_utc(),
            updated_at: row.updated_at.assume_utc(),
        })
    }
}

/// The list query's head (the list is built at run time: its filters vary). `find_active` spells
/// the same columns out for the checked macro.
const SELECT_PRODUCT: &str = "SELECT p.id, p.title, p.description, p.price, i.stock, \
     p.created_at, p.updated_at \
     FROM products p JOIN inventory i ON i.product_id = p.id";

/// Inserts the product and its inventory row; run it in a transaction.
pub async fn insert(tx: &mut MySqlConnection, product: &NewProduct) -> Result<u64, RepoError> {
    let id = sqlx::query!(
        "INSERT INTO products (title, description, price) VALUES (?, ?, ?)",
        product.title,
        product.description,
        product.price.amount()
    )
    .execute(&mut *tx)
    .await?
    .last_insert_id();
    sqlx::query!(
        "INSERT INTO inventory (product_id, stock) VALUES (?, ?)",
        id,
        product.stock
    )
    .execute(&mut *tx)
    .await?;
    Ok(id)
}

/// A product that is not deleted, with its stock.
pub async fn find_active(
    db: impl MySqlExecutor<'_>,
    id: u64,
) -> Result<Option<Product>, RepoError> {
    sqlx::query_as!(
        ProductRow,
        "SELECT p.id, p.title, p.description, p.price, i.stock, p.created_at, p.updated_at \
         FROM products p JOIN inventory i ON i.product_id = p.id \
         WHERE p.id = ? AND p.status = 'active'",
        id
    )
    .fetch_optional(db)
    .await?
    .map(Product::try_from)
    .transpose()
}

/// Locks an active product's row for the rest of the transaction; false when there is none.
pub async fn lock_active(tx: &mut MySqlConnection, id: u64) -> Result<bool, RepoError> {
    let found = sqlx::query_scalar!(
        "SELECT id FROM products WHERE id = ? AND status = 'active' FOR UPDATE",
        id
    )
    .fetch_optional(tx)
    .await?;
    Ok(found.is_some())
}

/// Applies `changes` to a product locked with [`lock_active`].
pub async fn update(
    tx: &mut MySqlConnection,
    id: u64,
    changes: &ProductChanges,
) -> Result<(), RepoError> {
    // updated_at is set explicitly: a stock-only change touches no products column, and
    // ON UPDATE fires only when a column changes.
    let mut query =
        QueryBuilder::<MySql>::new("UPDATE products SET updated_at = CURRENT_TIMESTAMP(3)");
    if let Some(title) = &changes.title {
        query.push(", title = ").push_bind(title);
    }
    if let Some(description) = &changes.description {
        query.push(", description = ").push_bind(description);
    }
    if let Some(price) = changes.price {
        query.push(", price = ").push_bind(price.amount());
    }
    query.push(" WHERE id = ").push_bind(id);
    query.build().execute(&mut *tx).await?;

    if let Some(stock) = changes.stock {
        sqlx::query!(
            "UPDATE inventory SET stock = ?, version = version + 1 WHERE product_id = ?",
            stock,
            id
        )
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Marks a product deleted; false when it did not exist or was already deleted.
pub async fn soft_delete(db: impl MySqlExecutor<'_>, id: u64) -> Result<bool, RepoError> {
    let result = sqlx::query!(
        "UPDATE products SET status = 'deleted' WHERE id = ? AND status = 'active'",
        id
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() > 0)
}

/// Stock of an active product.
pub async fn stock(db: impl MySqlExecutor<'_>, id: u64) -> Result<Option<u32>, RepoError> {
    Ok(sqlx::query_scalar!(
        "SELECT i.stock FROM inventory i JOIN products p ON p.id = i.product_id \
         WHERE p.id = ? AND p.status = 'active'",
        id
    )
    .fetch_optional(db)
    .await?)
}

/// One page of active products and the number of all matching ones.
pub async fn list(
    db: &sqlx::MySqlPool,
    query: &ProductQuery,
) -> Result<(Vec<Product>, u64), RepoError> {
    let mut select = QueryBuilder::<MySql>::new(SELECT_PRODUCT);
    push_filters(&mut select, query);
    let (column, direction) = order_by(query);
    // id breaks ties so that pages never overlap or skip rows with equal sort values.
    select
        .push(" ORDER BY p.")
        .push(column)
        .push(direction)
        .push(", p.id")
        .push(direction)
        .push(" LIMIT ")
        .push_bind(query.page.page_size)
        .push(" OFFSET ")
        .push_bind(query.page.offset());
    let rows = select.build_query_as::<ProductRow>().fetch_all(db).await?;
    let items = rows
        .into_iter()
        .map(Product::try_from)
        .collect::<Result<Vec<_>, _>>()?;

    let mut count = QueryBuilder::<MySql>::new("SELECT COUNT(*) FROM products p");
    push_filters(&mut count, query);
    let total: i64 = count.build_query_scalar().fetch_one(db).await?;
    Ok((items, total.max(0) as u64))
}

fn push_filters(builder: &mut QueryBuilder<MySql>, query: &ProductQuery) {
    builder.push(" WHERE p.status = 'active'");
    if let Some(text) = &query.title_contains {
        builder
            .push(" AND p.title LIKE ")
            .push_bind(format!("%{}%", escape_like(text)));
    }
    if let Some(min) = query.min_price {
        builder.push(" AND p.price >= ").push_bind(min.amount());
    }
    if let Some(max) = query.max_price {
        builder.push(" AND p.price <= ").push_bind(max.amount());
    }
}

/// Column and direction from the whitelisted sort; never user text.
fn order_by(query: &ProductQuery) -> (&'static str, &'static str) {
    let column = match query.sort.key {
        SortKey::Price => "price",
        SortKey::CreatedAt => "created_at",
        SortKey::Title => "title",
    };
    let direction = match query.sort.direction {
        Direction::Asc => " ASC",
        Direction::Desc => " DESC",
    };
    (column, direction)
}

/// Makes `%`, `_` and `\` match themselves in a LIKE pattern (MySQL's escape character is `\`).
fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape_like;

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(escape_like("50% off_now\\"), "50\\% off\\_now\\\\");
    }
}
