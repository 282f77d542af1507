//! SimpleHTTP's dispatch: an ordered list of (DIR regex, handler); the first unanchored match wins.

use std::rc::Rc;

use regex::Regex;

use crate::handler::Handler;

/// A DIR pattern that is not a valid regular expression.
#[derive(Debug, thiserror::Error)]
#[error("handler DIR {dir:?} is not a valid regular expression")]
pub struct BadDir {
    /// The DIR as given.
    pub dir: String,
    /// Why the regex crate refused it.
    #[source]
    pub source: regex::Error,
}

/// The handlers in the order they were given.
#[derive(Clone, Debug, Default)]
pub struct Router {
    /// The compiled DIR, the DIR as given (handed to handlers), the handler.
    routes: Vec<(Regex, Rc<str>, Handler)>,
}

impl Router {
    /// An empty router: every request gets `404 Not Found`.
    pub fn new() -> Router {
        Router::default()
    }

    /// Adds a handler after the existing ones.
    pub fn add(&mut self, dir: &str, handler: Handler) -> Result<(), BadDir> {
        let regex = Regex::new(dir).map_err(|source| BadDir { dir: dir.to_owned(), source })?;
        self.routes.push((regex, Rc::from(dir), handler));
        Ok(())
    }

    /// The first handler whose DIR matches anywhere in `target`, and that DIR.
    pub fn find(&self, target: &str) -> Option<(&Rc<str>, &Handler)> {
        self.routes.iter().find(|(regex, _, _)| regex.is_match(target)).map(|(_, dir, handler)| (dir, handler))
    }

    /// The DIRs, in order (SimpleHTTP's GETHANDLERS).
    pub fn dirs(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|(_, dir, _)| &**dir)
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// No routes at all.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::Response;

    fn router(dirs: &[&str]) -> Router {
        let mut router = Router::new();
        for dir in dirs {
            router.add(dir, Handler::new(|_, _| Response::new(bytes::Bytes::new()))).unwrap();
        }
        router
    }

    #[test]
    fn the_first_match_in_order_wins() {
        let r = router(&["^/bonk/zip", "^/bonk/", "^/"]);
        assert_eq!(&**r.find("/bonk/zip.html").unwrap().0, "^/bonk/zip");
        assert_eq!(&**r.find("/bonk/other").unwrap().0, "^/bonk/");
        assert_eq!(&**r.find("/honk").unwrap().0, "^/");
    }

    #[test]
    fn matching_is_unanchored() {
        let r = router(&["honk"]);
        assert!(r.find("/a/honk/b").is_some());
        assert!(r.find("/bonk").is_none());
    }

    #[test]
    fn a_bad_regex_names_the_dir() {
        let err = Router::new().add("^/(", Handler::new(|_, _| Response::new(bytes::Bytes::new()))).unwrap_err();
        assert!(err.to_string().contains("\"^/(\""), "{err}");
    }

    #[test]
    fn an_empty_router_matches_nothing() {
        assert!(Router::new().find("/").is_none());
    }
}
