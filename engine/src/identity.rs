//! Who runs a script ([`Caller`]) and what they may do ([`Role`]).

/// What a caller may do with the circle's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `db::get`, `exists`, `history` and `next_id` work; `db::insert`,
    /// `update` and `delete` fail with [`crate::ErrorKind::Forbidden`].
    Read,
    /// Every `db::` function works.
    Write,
}

impl Role {
    /// The role's name in messages: `read`, `write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
        }
    }
}

/// Who runs a script: the name `caller()` returns and the role the `db::`
/// functions enforce.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    /// The principal's name; `""` for an open circle and for the trusted
    /// identity.
    pub name: String,
    /// What the script may do.
    pub role: Role,
}

impl Caller {
    /// The trusted identity: no name (`caller()` gives `""`), role write.
    /// What [`crate::RunControl::default`] runs as.
    pub fn trusted() -> Caller {
        Caller {
            name: String::new(),
            role: Role::Write,
        }
    }
}

impl Default for Caller {
    fn default() -> Self {
        Caller::trusted()
    }
}
