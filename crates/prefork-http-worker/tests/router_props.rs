//! Property tests of SimpleHTTP's dispatch (`Router`) against arbitrary paths and DIRs: it
//! never panics, the first DIR that matches anywhere in the path wins, a path that no DIR
//! matches finds nothing, and a DIR that is not a regular expression is refused by name.

use prefork_http_worker::{Handler, Response, Router};
use proptest::prelude::*;

fn handler() -> Handler {
    Handler::new(|_, _| Response::new(bytes::Bytes::new()))
}

/// The binary's own routes (the status page is matched before the router).
fn demo_router() -> Router {
    let mut router = Router::new();
    for dir in ["^/$", "^/sleep/", "^/block/", "^/leak/"] {
        router.add(dir, handler()).expect("a valid DIR");
    }
    router
}

/// A DIR made of a literal: unanchored (`literal`) or anchored at the start (`^literal`).
#[derive(Clone, Debug)]
struct LiteralDir {
    literal: String,
    anchored: bool,
}

impl LiteralDir {
    fn pattern(&self) -> String {
        format!("{}{}", if self.anchored { "^" } else { "" }, regex::escape(&self.literal))
    }

    /// The model: what matching this DIR unanchored means, without a regex.
    fn matches(&self, path: &str) -> bool {
        if self.anchored { path.starts_with(&self.literal) } else { path.contains(&self.literal) }
    }
}

/// Short literals over a small alphabet (so that they often occur in the paths), with the
/// characters that mean something to a regex among them.
fn literal_dir() -> impl Strategy<Value = LiteralDir> {
    ("[/ab.*+?()\\[\\]{}|^$\\\\é]{0,4}", any::<bool>()).prop_map(|(literal, anchored)| LiteralDir { literal, anchored })
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof!["[/ab.*+?()\\[\\]{}|^$\\\\é]{0,12}", "/[a-z0-9/%?=&.-]{0,40}", any::<String>(),]
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_demo_routes_never_panic_and_match_their_prefix(path in path()) {
        let router = demo_router();
        let found = router.find(&path).map(|(dir, _)| dir.to_string());
        let expected = ["/sleep/", "/block/", "/leak/"]
            .iter()
            .find(|prefix| path.starts_with(*prefix))
            .map(|prefix| format!("^{prefix}"))
            .or_else(|| (path == "/").then(|| "^/$".to_owned()));
        prop_assert_eq!(found, expected);
    }

    #[test]
    fn the_first_dir_that_matches_wins(dirs in prop::collection::vec(literal_dir(), 0..6), path in path()) {
        let mut router = Router::new();
        for dir in &dirs {
            router.add(&dir.pattern(), handler()).expect("an escaped literal is a valid DIR");
        }
        prop_assert_eq!(router.len(), dirs.len());
        let found = router.find(&path).map(|(dir, _)| dir.to_string());
        let expected = dirs.iter().find(|dir| dir.matches(&path)).map(LiteralDir::pattern);
        // None when no DIR matches: the worker answers 404.
        prop_assert_eq!(found, expected);
    }

    #[test]
    fn any_dir_is_compiled_or_refused_by_name(dir in any::<String>(), path in any::<String>()) {
        let mut router = Router::new();
        match router.add(&dir, handler()) {
            Ok(()) => {
                let regex = regex::Regex::new(&dir).expect("the router compiled it");
                prop_assert_eq!(router.find(&path).is_some(), regex.is_match(&path));
            }
            Err(error) => {
                prop_assert!(router.is_empty());
                prop_assert!(error.to_string().contains(&format!("{dir:?}")), "{}", error);
            }
        }
    }
}
