-- Emails are compared byte for byte (issue 23). The application stores one canonical spelling
-- of each address (Unicode NFKC, lower-cased, plain ASCII: domain::user::Email) and looks it up
-- the same way; utf8mb4_unicode_ci also matched spellings the application keeps apart ('tést'
-- and 'test', 'İ' and 'i', a trailing NUL), so the database let every such spelling log in to
-- one account while the per-email login limit counted each apart. Rows stored before this are
-- brought to the canonical form by the data step that runs after the migrations
-- (repo::mysql::users::canonicalize_emails), which reports the ones it cannot rewrite.
ALTER TABLE users
    MODIFY email VARCHAR(254) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL;
