//! Every status this server sends, with its reason phrase: the responses' status lines and
//! the metrics' `status` label both come from here.

/// (status, reason phrase); the metrics keep one counter slot per row, plus one for others.
pub const ALL: [(u16, &str); 30] = [
    (100, "Continue"),
    (200, "OK"),
    (201, "Created"),
    (204, "No Content"),
    (206, "Partial Content"),
    (304, "Not Modified"),
    (400, "Bad Request"),
    (401, "Unauthorized"),
    (403, "Forbidden"),
    (404, "Not Found"),
    (405, "Method Not Allowed"),
    (408, "Request Timeout"),
    (409, "Conflict"),
    (410, "Gone"),
    (411, "Length Required"),
    (412, "Precondition Failed"),
    (413, "Content Too Large"),
    (414, "URI Too Long"),
    (415, "Unsupported Media Type"),
    (416, "Range Not Satisfiable"),
    (417, "Expectation Failed"),
    (423, "Locked"),
    (429, "Too Many Requests"),
    (431, "Request Header Fields Too Large"),
    (460, "Checksum Mismatch"),
    (500, "Internal Server Error"),
    (501, "Not Implemented"),
    (503, "Service Unavailable"),
    (505, "HTTP Version Not Supported"),
    (507, "Insufficient Storage"),
];

/// The row of `status` in `ALL`; `ALL.len()` for one not listed.
pub fn index(status: u16) -> usize {
    ALL.iter().position(|&(s, _)| s == status).unwrap_or(ALL.len())
}

pub fn reason(status: u16) -> &'static str {
    ALL.get(index(status)).map_or("Unknown", |&(_, r)| r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows() {
        assert_eq!(reason(201), "Created");
        assert_eq!(reason(460), "Checksum Mismatch");
        assert_eq!(reason(299), "Unknown");
        assert_eq!(index(299), ALL.len());
        let unique: std::collections::HashSet<_> = ALL.iter().map(|r| r.0).collect();
        assert_eq!(unique.len(), ALL.len());
    }
}
