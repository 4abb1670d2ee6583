-- The compose stack's demo data, loaded by the mariadb image on its first start: the same
-- source and replica `make demo` builds. 5,000 users; the replica misses every 97th row
-- (51 type-1 callbacks) and has a stale name in every 89th (56 type-2 callbacks).
CREATE DATABASE cupid_demo CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
CREATE DATABASE cupid_demo_replica CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
-- The init scripts run with no database selected; seq_1_to_N needs one.
USE cupid_demo;

CREATE TABLE cupid_demo.user (
  id BIGINT PRIMARY KEY AUTO_INCREMENT,
  number VARCHAR(16) UNIQUE,
  name VARCHAR(64),
  avatar VARCHAR(255),
  update_time VARCHAR(19),
  KEY (update_time)
);
CREATE TABLE cupid_demo_replica.user (
  number VARCHAR(16) PRIMARY KEY,
  name VARCHAR(64),
  avatar VARCHAR(255)
);

INSERT INTO cupid_demo.user
SELECT seq, CONCAT('U', LPAD(seq, 6, '0')), CONCAT('user ', seq),
       CONCAT('https://cdn.example.com/', LPAD(LOWER(HEX(CRC32(seq))), 8, '0'), '.png'),
       DATE_FORMAT(UTC_TIMESTAMP() - INTERVAL 1 HOUR, '%Y-%m-%d %H:%i:%s')
FROM seq_1_to_5000;

INSERT INTO cupid_demo_replica.user
SELECT number, IF(id % 89 = 0, CONCAT(name, ' (stale)'), name), avatar
FROM cupid_demo.user
WHERE id % 97 <> 0;
