//! The end-to-end tests, one crate: the real binary against real nginx, php-fpm, Apache, an SMTP
//! server, mcron and the system's own php-fpm service, all on loopback. `common` holds the fixtures
//! and the one builder of the binary's command; each module is one area of the README.

mod attack3;
mod attack4;
mod attack5;
mod attack6;
mod attack7;
mod common;
mod dns;
mod doctor;
mod fastcgi;
mod files;
mod healthcheck;
mod hook;
mod inputs;
mod layout;
mod locks;
mod never_worse_hook;
mod never_worse_mail;
mod ondemand;
mod owner21;
mod policy;
mod pong;
mod pool_user;
mod pools;
mod relaunch;
mod report;
mod security;
mod status21;
mod system_service;
mod trust_answers;
mod trust_files;
mod trust_hook;
mod trust_listeners;
mod trust_plans;
mod trust_text;
mod units;
mod watch;
