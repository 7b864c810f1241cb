//! The ids of what the store keeps, as types: a user id is not a passkey id
//! is not a pending sign-in's id, though each is text in the database. Each
//! derefs to `str` (for SQL, headers and logs) and is made from text read
//! back from the store or minted by Sesame.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_string())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

id_type!(
    /// A user (`u_` and random characters), sent to apps as `Remote-User`.
    UserId
);
id_type!(
    /// A pending sign-in, also its link token's `jti`. Not a secret: the
    /// token and code are.
    PendingId
);
id_type!(
    /// A passkey: its credential id, base64url.
    PasskeyId
);
id_type!(
    /// A session as stored: the SHA-256 of its secret id, hex. A copy of the
    /// database holds no live session id.
    SessionHash
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_its_text_in_sql_json_and_logs_and_names_its_kind_in_debug() {
        let u = UserId::from("u_1");
        assert_eq!(
            (u.as_str(), &*u, u.to_string()),
            ("u_1", "u_1", "u_1".to_string())
        );
        assert_eq!(serde_json::to_string(&u).unwrap(), "\"u_1\"");
        assert_eq!(serde_json::from_str::<UserId>("\"u_1\"").unwrap(), u);
        assert_eq!(format!("{u:?}"), "UserId(\"u_1\")");
        assert_eq!(
            format!("{:?}", PasskeyId::from("u_1")),
            "PasskeyId(\"u_1\")"
        );
        let owned = String::from("u_1");
        assert!(u == "u_1" && u == *"u_1" && u == owned);
    }
}
