//! Routes declared with the scope they need and their description, in one place: each resource
//! module builds its routes with [`Api`], which takes a [`Need`] and an [`Op`] beside every
//! method and path, so a route cannot exist without either. The collected [`RouteNeeds`] is
//! what `require_api_key` checks, and what the OpenAPI document is made of.

use std::collections::HashMap;
use std::sync::Arc;

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter};
use axum::Router;
use cuttle_core::Scope;

use crate::openapi::Op;
use crate::AppState;

/// What a route needs: a scope, and whether a `register-target` key may call it too (for its
/// own target only, which the handler checks with `Caller::check_own_target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Need {
    pub(crate) scope: Scope,
    pub(crate) register_target: bool,
}

/// Needs `scope` (or one that includes it).
pub(crate) const fn need(scope: Scope) -> Need {
    Need {
        scope,
        register_target: false,
    }
}

/// Needs `scope`, or a `register-target` key acting on its own target.
pub(crate) const fn need_or_own_target(scope: Scope) -> Need {
    Need {
        scope,
        register_target: true,
    }
}

pub(crate) const READER: Need = need(Scope::Reader);
pub(crate) const DEPLOYER: Need = need(Scope::Deployer);
pub(crate) const OPERATOR: Need = need(Scope::Operator);
pub(crate) const ADMIN: Need = need(Scope::Admin);

/// One route: its method, its path pattern, what it needs (`None`: no key, for the few open
/// routes) and its description.
pub(crate) struct Declared {
    pub(crate) method: Method,
    pub(crate) path: &'static str,
    pub(crate) need: Option<Need>,
    pub(crate) op: Op,
}

/// Every keyed route's need, by method and path pattern.
#[derive(Default)]
pub(crate) struct RouteNeeds {
    by_route: HashMap<(Method, &'static str), Need>,
    declared: Vec<Declared>,
}

impl RouteNeeds {
    /// What `method route` needs; a route nobody declared (none can be, through [`Api`]) needs
    /// `admin`.
    pub(crate) fn need(&self, method: &Method, route: &str) -> Need {
        self.by_route
            .get(&(method.clone(), route))
            .copied()
            .unwrap_or(ADMIN)
    }

    /// Every declared route, in declaration order.
    pub(crate) fn declared(&self) -> &[Declared] {
        &self.declared
    }
}

/// A router under construction, with the need of each route it holds.
pub(crate) struct Api {
    router: Router<AppState>,
    declared: Vec<Declared>,
}

impl Api {
    pub(crate) fn new() -> Api {
        Api {
            router: Router::new(),
            declared: Vec::new(),
        }
    }

    fn on<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        need: Option<Need>,
        handler: H,
        op: Op,
    ) -> Api
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|_| panic!("{method} is not a method a route can take"));
        // axum merges the methods of one path given in several calls (and panics on a method
        // given twice).
        self.router = self.router.route(path, on(filter, handler));
        self.declared.push(Declared {
            method,
            path,
            need,
            op,
        });
        self
    }

    pub(crate) fn get<H, T>(self, path: &'static str, need: Need, handler: H, op: Op) -> Api
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.on(Method::GET, path, Some(need), handler, op)
    }

    pub(crate) fn post<H, T>(self, path: &'static str, need: Need, handler: H, op: Op) -> Api
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.on(Method::POST, path, Some(need), handler, op)
    }

    pub(crate) fn put<H, T>(self, path: &'static str, need: Need, handler: H, op: Op) -> Api
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.on(Method::PUT, path, Some(need), handler, op)
    }

    pub(crate) fn patch<H, T>(self, path: &'static str, need: Need, handler: H, op: Op) -> Api
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.on(Method::PATCH, path, Some(need), handler, op)
    }

    pub(crate) fn delete<H, T>(self, path: &'static str, need: Need, handler: H, op: Op) -> Api
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.on(Method::DELETE, path, Some(need), handler, op)
    }

    /// A route that takes no key (the ping, the cluster's identity, the OpenAPI document).
    pub(crate) fn open_get<H, T>(self, path: &'static str, handler: H, op: Op) -> Api
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.on(Method::GET, path, None, handler, op)
    }

    pub(crate) fn merge(mut self, other: Api) -> Api {
        self.router = self.router.merge(other.router);
        self.declared.extend(other.declared);
        self
    }

    /// The router, and the needs of its routes (several routers' needs join in
    /// [`RouteNeeds::join`]).
    pub(crate) fn into_parts(self) -> (Router<AppState>, Vec<Declared>) {
        (self.router, self.declared)
    }
}

impl RouteNeeds {
    /// The needs of every route given; a route declared twice is a programming error.
    pub(crate) fn join(parts: impl IntoIterator<Item = Vec<Declared>>) -> Arc<RouteNeeds> {
        let mut needs = RouteNeeds::default();
        for d in parts.into_iter().flatten() {
            let need = d
                .need
                .unwrap_or_else(|| panic!("{} {} takes no key", d.method, d.path));
            let previous = needs.by_route.insert((d.method.clone(), d.path), need);
            assert!(previous.is_none(), "{} {} declared twice", d.method, d.path);
            needs.declared.push(d);
        }
        Arc::new(needs)
    }
}
