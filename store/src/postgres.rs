//! The PostgreSQL backend: not written yet.

use crate::location::PostgresUrl;
use crate::{Migrated, Store, StoreError};

fn unsupported() -> StoreError {
    StoreError::Backend("PostgreSQL is not supported yet".into())
}

pub fn open(_url: &PostgresUrl) -> Result<Box<dyn Store>, StoreError> {
    Err(unsupported())
}

pub fn create(_url: &PostgresUrl) -> Result<Box<dyn Store>, StoreError> {
    Err(unsupported())
}

pub fn migrate(_url: &PostgresUrl) -> Result<Migrated, StoreError> {
    Err(unsupported())
}
