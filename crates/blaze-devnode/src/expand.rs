//! `$(VAR)` expansion as the kubelet applies it to `command`, `args` and env values.
//!
//! `$(NAME)` becomes the value of `NAME` when it is defined and stays as written when it is
//! not; `$$` is an escaped `$`, so `$$(NAME)` yields the literal `$(NAME)`; any other `$` is
//! left alone.

/// Expands `$(VAR)` references in `input` with `lookup`.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::expand;

    fn env(name: &str) -> Option<String> {
        match name {
            "POD_IP" => Some("127.0.0.7".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_like_the_kubelet() {
        assert_eq!(expand("--listen=$(POD_IP):8080", env), "--listen=127.0.0.7:8080");
        assert_eq!(expand("$(MISSING)", env), "$(MISSING)");
        assert_eq!(expand("$$(POD_IP)", env), "$(POD_IP)");
        assert_eq!(expand("$$$(POD_IP)", env), "$127.0.0.7");
        assert_eq!(expand("a$(EMPTY)b", env), "ab");
        assert_eq!(expand("cost $5 and $(", env), "cost $5 and $(");
        assert_eq!(expand("$", env), "$");
        assert_eq!(expand("$(POD_IP)$(POD_IP)", env), "127.0.0.7127.0.0.7");
    }
}
