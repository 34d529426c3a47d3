<?php
// php-relaunch heartbeat page: /var/www/heartbeat/php-heartbeat.php
// Answering at all proves nginx reached php-fpm and PHP ran; the two lines say which vhost answered.
header('Cache-Control: no-store');
header('Content-Type: text/plain');
echo 'HTTP_HOST: ', $_SERVER['HTTP_HOST'] ?? '', "\n";
echo 'SERVER_ADDR: ', $_SERVER['SERVER_ADDR'] ?? '', "\n";
