# php-relaunch: watch php-fpm from cron. Nothing here runs until you uncomment a line.
# `php-relaunch doctor`-style advice: pick the heartbeat that fits your pools (see
# /usr/share/doc/php-relaunch/README.md); php-relaunch prints nothing while all is well.
#
# Through nginx's heartbeat vhost (/usr/share/doc/php-relaunch/nginx/heartbeat.conf):
#* * * * * root /usr/sbin/php-relaunch http://127.0.0.1:8889/php-heartbeat.php 5 'ops@example.com' --service php8.2-fpm >/dev/null 2>&1
#
# Or php-fpm itself over FastCGI (set `ping.path = /ping` in the pool first):
#* * * * * root /usr/sbin/php-relaunch 'unix:///run/php/php8.2-fpm.sock;/ping' 2 'ops@example.com' --service php8.2-fpm >/dev/null 2>&1
