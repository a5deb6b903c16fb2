DROP TABLE virtual_keys;
