//! Errors as one line of text, for logs, the page and the CLI.

/// `e` and every error beneath it, joined by ": ". HTTP clients hide the useful part (a refused
/// connection, a certificate the system does not trust) in the sources.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapped(&'static str, Option<Box<Wrapped>>);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn every_source_is_joined() {
        let tls = Wrapped("invalid peer certificate", None);
        let connect = Wrapped("client error (Connect)", Some(Box::new(tls)));
        let request = Wrapped("error sending request", Some(Box::new(connect)));
        assert_eq!(
            error_chain(&request),
            "error sending request: client error (Connect): invalid peer certificate"
        );
        assert_eq!(error_chain(&Wrapped("alone", None)), "alone");
    }
}
